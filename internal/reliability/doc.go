// Package reliability holds the tests that push the real autorollbackd
// binary against the real local control plane past the happy path: an alert
// storm from an Alertmanager HA pair, SIGKILL at random points of an
// incident, a stopped API server, concurrent writers on the workload being
// rolled back, and a corpus of malformed and hostile webhook requests.
//
// The tests assert the daemon's promises under those faults: Alertmanager is
// answered 200 or a retryable 503 and nothing in between, each bad rollout
// is rolled back exactly once, nobody is paged twice for the same level,
// and the process stays up and bounded in memory. docs/reliability.md
// describes each test, its bounds and how to run it.
//
// It has no code of its own; the daemon is the code under test.
package reliability
