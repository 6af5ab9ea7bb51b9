package reason_test

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/reason"
)

const (
	docPath   = "../../docs/reasons.md"
	beginMark = "<!-- BEGIN generated: reason table (LAYERD_UPDATE_DOCS=1 go test ./pkg/reason) -->"
	endMark   = "<!-- END generated -->"
)

func renderTable() string {
	var b strings.Builder
	b.WriteString("| code | permanent | meaning |\n|---|---|---|\n")
	for _, i := range reason.All() {
		perm := "no"
		if i.Permanent {
			perm = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", i.Code, perm, i.Description)
	}
	return b.String()
}

// declaredCodes parses the package source and returns every constant of type Code.
func declaredCodes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Code" {
					for _, n := range vs.Names {
						out = append(out, n.Name)
					}
				}
			}
		}
	}
	return out
}

func TestTable(t *testing.T) {
	t.Run("every_declared_constant_is_in_the_table_once_and_named_after_itself", func(t *testing.T) {
		seen := map[reason.Code]int{}
		for _, i := range reason.All() {
			seen[i.Code]++
			if i.Description == "" || strings.Contains(i.Description, "\n") {
				t.Errorf("%s: description must be one non-empty line", i.Code)
			}
		}
		declared := declaredCodes(t)
		for _, name := range declared {
			if seen[reason.Code(name)] != 1 {
				t.Errorf("constant %s (value must equal its name) appears %d times in the table", name, seen[reason.Code(name)])
			}
		}
		if len(declared) != len(reason.All()) {
			t.Errorf("%d constants declared, %d in the table", len(declared), len(reason.All()))
		}
	})
	t.Run("design_permanent_codes_are_permanent", func(t *testing.T) {
		for _, c := range []reason.Code{reason.SignatureRejected, reason.NotBootable, reason.ArchMismatch, reason.InvalidReference} {
			if !c.Permanent() {
				t.Errorf("%s must be permanent", c)
			}
		}
		if reason.RegistryUnavailable.Permanent() || reason.Code("Nope").Permanent() {
			t.Error("RegistryUnavailable and unknown codes must be transient")
		}
	})
	t.Run("docs_reasons_md_equals_the_table", func(t *testing.T) {
		raw, err := os.ReadFile(docPath)
		if err != nil {
			t.Fatalf("reading %s: %v", docPath, err)
		}
		doc := string(raw)
		b, e := strings.Index(doc, beginMark), strings.Index(doc, endMark)
		if b < 0 || e < b {
			t.Fatalf("%s lacks the markers %q … %q", docPath, beginMark, endMark)
		}
		want := doc[:b] + beginMark + "\n" + renderTable() + doc[e:]
		if want == doc {
			return
		}
		if os.Getenv("LAYERD_UPDATE_DOCS") == "1" {
			if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s is out of date: run LAYERD_UPDATE_DOCS=1 go test ./pkg/reason", docPath)
	})
}

type codedErr struct{ c reason.Code }

func (e codedErr) Error() string           { return string(e.c) }
func (e codedErr) ReasonCode() reason.Code { return e.c }

func TestOf(t *testing.T) {
	t.Run("finds_the_code_through_wrapping", func(t *testing.T) {
		err := fmt.Errorf("outer: %w", codedErr{reason.ArchMismatch})
		if c, ok := reason.Of(err); !ok || c != reason.ArchMismatch {
			t.Fatalf("Of = %q, %v", c, ok)
		}
	})
	t.Run("reports_false_for_plain_errors", func(t *testing.T) {
		if _, ok := reason.Of(errors.New("x")); ok {
			t.Fatal("plain error has no code")
		}
	})
}
