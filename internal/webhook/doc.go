// Package webhook is autorollbackd's front door: it receives Alertmanager's
// webhook notifications and hands them to the engine.
//
// It exists because this endpoint can make the daemon roll back production:
// only an authenticated sender may reach it (bearer token, basic auth or a
// client certificate, from files that rotate without a restart), each
// notification says which sender it came from and so which namespaces it
// may speak for, and every
// answer is chosen for Alertmanager's retry rule, which retries 5xx and
// drops a notification on any 4xx. A payload that can never succeed is
// refused with 4xx and a message naming the field; a daemon that cannot take
// work right now answers 503 so that the alert is not lost.
//
// It also authenticates the readers of the incidents API, with a credential
// of their own that no sender of alerts holds.
package webhook
