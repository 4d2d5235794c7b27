package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
)

// TestErrorMapping is the table of what the client is told for each kind
// of Dialer or Resolver error.
func TestErrorMapping(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: err}}
	}
	for _, tc := range []struct {
		name   string
		err    error
		reply  Reply
		status int
	}{
		{"nil", nil, ReplySucceeded, http.StatusOK},
		{"refused by policy", fmt.Errorf("policy: 192.0.2.1 is private: %w", ErrRefused), ReplyNotAllowed, http.StatusForbidden},
		{"network unreachable", ErrNetworkUnreachable, ReplyNetworkUnreachable, http.StatusBadGateway},
		{"ENETUNREACH", op(syscall.ENETUNREACH), ReplyNetworkUnreachable, http.StatusBadGateway},
		{"host unreachable", fmt.Errorf("netstack: %w", ErrHostUnreachable), ReplyHostUnreachable, http.StatusBadGateway},
		{"EHOSTUNREACH", op(syscall.EHOSTUNREACH), ReplyHostUnreachable, http.StatusBadGateway},
		{"connection refused", ErrConnectionRefused, ReplyConnectionRefused, http.StatusBadGateway},
		{"ECONNREFUSED", op(syscall.ECONNREFUSED), ReplyConnectionRefused, http.StatusBadGateway},
		{"context deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), ReplyTTLExpired, http.StatusGatewayTimeout},
		{"i/o timeout", op(os.ErrDeadlineExceeded), ReplyTTLExpired, http.StatusGatewayTimeout},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "x", IsTimeout: true}, ReplyTTLExpired, http.StatusGatewayTimeout},
		{"nxdomain", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, ReplyHostUnreachable, http.StatusBadGateway},
		{"policy refuses a name", fmt.Errorf("resolver: %w", ErrRefused), ReplyNotAllowed, http.StatusForbidden},
		{"other", errors.New("boom"), ReplyGeneralFailure, http.StatusBadGateway},
		{"canceled", context.Canceled, ReplyGeneralFailure, http.StatusBadGateway},
	} {
		if got := ReplyFor(tc.err); got != tc.reply {
			t.Errorf("%s: ReplyFor = %#x, want %#x", tc.name, got, tc.reply)
		}
		if got := HTTPStatusFor(tc.err); got != tc.status {
			t.Errorf("%s: HTTPStatusFor = %d, want %d", tc.name, got, tc.status)
		}
	}
}
