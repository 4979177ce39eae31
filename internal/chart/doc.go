// Package chart holds the tests of the Helm chart in charts/autorollbackd:
// lint, rendering of every documented mode with assertions on the objects
// (security context, probes, RBAC), the Prometheus rules and the Grafana
// dashboard through promtool, and installs on the local control plane that
// check the ServiceAccount's permissions with `kubectl auth can-i`.
//
// It has no code of its own; the chart is the code under test.
package chart
