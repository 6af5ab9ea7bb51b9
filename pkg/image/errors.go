package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"syscall"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"

	"layerd.dev/layerd/pkg/reason"
)

// Error is the only error type returned by Client methods: a reason code, the image it is about
// and the underlying cause.
type Error struct {
	Code  reason.Code
	Image string
	Err   error
}

// Error returns one line: "<Code>: image <ref>: <cause>".
func (e *Error) Error() string {
	msg := string(e.Code) + ": image " + e.Image
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return oneLine(msg)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ReasonCode implements reason.Coded.
func (e *Error) ReasonCode() reason.Code { return e.Code }

var _ reason.Coded = (*Error)(nil)

// oneLine folds multi-line library messages (mirror failures, multierr lists) into one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}

func newError(code reason.Code, img string, err error) *Error {
	return &Error{Code: code, Image: img, Err: err}
}

// classification is what the retry loop needs to know about a failure.
type classification struct {
	code      reason.Code
	retryable bool
}

// classify maps an error from go.podman.io/image (or the network below it) to a reason code.
// fallback is used when nothing in the chain is recognised.
func classify(err error, fallback reason.Code) classification {
	var ie *Error
	if errors.As(err, &ie) {
		return classification{code: ie.Code}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return classification{reason.RegistryUnavailable, true}
	}
	if errors.Is(err, context.Canceled) {
		return classification{code: reason.RegistryUnavailable}
	}
	var pre signature.PolicyRequirementError
	if errors.As(err, &pre) {
		return classification{code: reason.SignatureRejected}
	}
	var unauth docker.ErrUnauthorizedForCredentials
	if errors.As(err, &unauth) {
		return classification{code: reason.Unauthorized}
	}
	if errors.Is(err, docker.ErrTooManyRequests) {
		return classification{reason.RegistryUnavailable, true}
	}
	var coder errcode.ErrorCoder
	if errors.As(err, &coder) {
		if c, ok := classifyErrorCode(coder.ErrorCode()); ok {
			return c
		}
	}
	if status, ok := httpStatus(err); ok {
		return classifyStatus(status)
	}
	if c, ok := classifyNetwork(err); ok {
		return c
	}
	return classification{code: fallback}
}

func classifyErrorCode(code errcode.ErrorCode) (classification, bool) {
	switch code.Descriptor().Value {
	case "UNAUTHORIZED", "DENIED":
		return classification{code: reason.Unauthorized}, true
	case "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND":
		return classification{code: reason.ImageNotFound}, true
	case "UNAVAILABLE", "TOOMANYREQUESTS":
		return classification{reason.RegistryUnavailable, true}, true
	}
	return classification{}, false
}

func classifyStatus(status int) classification {
	switch {
	case status == 401 || status == 403:
		return classification{code: reason.Unauthorized}
	case status == 404:
		return classification{code: reason.ImageNotFound}
	case status == 408 || status == 429 || status >= 500:
		return classification{reason.RegistryUnavailable, true}
	}
	return classification{code: reason.RegistryUnavailable}
}

// httpStatus finds an HTTP status code in the chain. go.podman.io/image reports some statuses
// only through unexported types with a StatusCode field, so any struct error with an int
// StatusCode field counts.
func httpStatus(err error) (int, bool) {
	var st docker.UnexpectedHTTPStatusError
	if errors.As(err, &st) {
		return st.StatusCode, true
	}
	found, status := false, 0
	walk(err, func(e error) bool {
		v := reflect.ValueOf(e)
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return false
		}
		f := v.FieldByName("StatusCode")
		if f.IsValid() && f.CanInt() && f.Int() >= 100 && f.Int() < 600 {
			found, status = true, int(f.Int())
			return true
		}
		return false
	})
	return status, found
}

// walk visits err and everything it wraps (both Unwrap forms) until visit returns true.
func walk(err error, visit func(error) bool) bool {
	if err == nil {
		return false
	}
	if visit(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walk(u.Unwrap(), visit)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if walk(e, visit) {
				return true
			}
		}
	}
	return false
}

func classifyNetwork(err error) (classification, bool) {
	// TLS and certificate problems are configuration: retrying does not help.
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &certErr) || errors.As(err, &recErr) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return classification{code: reason.RegistryUnavailable}, true
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return classification{reason.RegistryUnavailable, true}, true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return classification{reason.RegistryUnavailable, dnsErr.IsTemporary || dnsErr.IsTimeout}, true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return classification{reason.RegistryUnavailable, true}, true
	}
	return classification{}, false
}
