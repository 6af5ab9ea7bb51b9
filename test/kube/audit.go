package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type AuditEvent struct {
	AuditID        string          `json:"auditID"`
	Stage          string          `json:"stage"`
	Verb           string          `json:"verb"`
	RequestURI     string          `json:"requestURI"`
	User           AuditUser       `json:"user"`
	ObjectRef      *AuditObjectRef `json:"objectRef,omitempty"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus,omitempty"`
}

// AuditUser is the authenticated user of an audit event.
type AuditUser struct {
	Username string              `json:"username"`
	Groups   []string            `json:"groups"`
	Extra    map[string][]string `json:"extra"`
}

// AuditObjectRef names the object an audited request acted on.
type AuditObjectRef struct {
	Resource    string `json:"resource"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	APIGroup    string `json:"apiGroup"`
	Subresource string `json:"subresource"`
}

var writeVerbs = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true}

// IsWrite reports whether the event is a completed mutating request.
func (e AuditEvent) IsWrite() bool { return e.Stage == "ResponseComplete" && writeVerbs[e.Verb] }

// NodeName returns the node a node-bound ServiceAccount token was bound to, or "".
func (e AuditEvent) NodeName() string {
	if v := e.User.Extra[NodeNameExtra]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// AuditEvents parses the audit log written so far. A partly written last line is ignored.
func (c *Cluster) AuditEvents() ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLogPath)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	defer f.Close()
	var events []AuditEvent
	dec := json.NewDecoder(f)
	for {
		var e AuditEvent
		err := dec.Decode(&e)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return events, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parsing audit log event %d: %w", len(events)+1, err)
		}
		events = append(events, e)
	}
}
