// Package escalate tells people about an incident when automation is not
// enough: it follows the runbook's escalation path (page the on-call SRE at
// 5 minutes, the engineering lead at 10, open the war room at 15), announces
// every action and outcome to stakeholders ("notify stakeholders of
// rollback", "update incident channel") and resolves the pages it opened
// once the incident is over.
//
// Two parts, kept apart on purpose:
//
//   - Ladder is the clock: a pure function of the incident's start, the
//     current time and the levels already paged. It does no I/O and reads no
//     clock, so the engine can persist the paged levels, restart, and pick
//     up exactly where it left off.
//   - Escalator owns the notifiers and delivers one Message to the ones a
//     step, an announcement or a resolution names. Each notifier type
//     (pagerduty, slack, webhook, events) is registered in one table; an
//     unknown type is a configuration error, never a silent fallback.
//
// Delivery retries transient failures (network errors, timeouts, HTTP 408,
// 429 and 5xx) with exponential backoff and honours Retry-After. Secrets
// (PagerDuty routing keys, Slack webhook URLs, bearer tokens) are read from
// files at New and never appear in logs, errors or metrics.
package escalate
