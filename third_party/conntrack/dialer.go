// Package conntrack stands in for github.com/mwitkow/go-conntrack, which
// prometheus/common's HTTP client configuration dials through. It offers the
// dialer options that package calls and dials as configured, without the
// connection tracing and metrics: the tracing imports golang.org/x/net/trace,
// whose init registers handlers that execute html/template, and a template
// executed anywhere in a binary makes the linker keep every exported method
// of every type. The metrics went to the default Prometheus registry, which
// autorollbackd does not serve.
package conntrack

import (
	"context"
	"net"
)

type dialerOpts struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialerOpt configures NewDialContextFunc.
type DialerOpt func(*dialerOpts)

// DialWithName names the dialer; without tracing or metrics the name is
// not used.
func DialWithName(string) DialerOpt { return func(*dialerOpts) {} }

// DialWithTracing asks for connection tracing, which this package does not do.
func DialWithTracing() DialerOpt { return func(*dialerOpts) {} }

// DialWithDialContextFunc dials through f instead of a net.Dialer.
func DialWithDialContextFunc(f func(context.Context, string, string) (net.Conn, error)) DialerOpt {
	return func(o *dialerOpts) { o.dial = f }
}

// NewDialContextFunc returns the dial function the options describe.
func NewDialContextFunc(opts ...DialerOpt) func(context.Context, string, string) (net.Conn, error) {
	o := dialerOpts{dial: (&net.Dialer{}).DialContext}
	for _, opt := range opts {
		opt(&o)
	}
	return o.dial
}
