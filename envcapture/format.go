package envcapture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Syntax is a file format for an environment; see the Syntax constants.
type Syntax string

// The syntaxes [Write] and [Read] support.
const (
	// SyntaxDocker is the .env format of docker compose v2 (`docker compose
	// --env-file`, a service's env_file), also read by most IDE .env support. It is
	// not the format of `docker run --env-file`, which takes every value literally
	// and cannot hold a newline.
	SyntaxDocker Syntax = "docker"
	// SyntaxPOSIX is a POSIX shell script of `export KEY='value'` lines, to be
	// sourced.
	SyntaxPOSIX Syntax = "posix"
	// SyntaxJSON is one JSON object mapping names to string values.
	SyntaxJSON Syntax = "json"
)

var syntaxes = []Syntax{SyntaxDocker, SyntaxPOSIX, SyntaxJSON}

// ParseSyntax returns the Syntax named s ("docker", "posix" or "json").
func ParseSyntax(s string) (Syntax, error) {
	if slices.Contains(syntaxes, Syntax(s)) {
		return Syntax(s), nil
	}
	return "", fmt.Errorf("envcapture: unknown syntax %q (valid: docker, posix, json)", s)
}

// ErrUnrepresentable is wrapped by the error [Write] returns when some variables were
// left out because the syntax cannot express their names, or because the entries were
// not "KEY=value".
var ErrUnrepresentable = errors.New("variables left out")

// Write writes env ("KEY=value" entries) to w in the given syntax. Each name is written
// once, with the last value given for it; docker and posix files keep the order of
// env, JSON keys are sorted.
//
// Encoding, per syntax:
//
//   - docker: a value made only of ASCII letters, digits and `_-.,/:@%+=` is written
//     bare (KEY=value; an empty value is KEY=). Otherwise, a value without a single
//     quote or line break that does not end in a backslash is single-quoted
//     (KEY='value'), which compose takes literally: `$`, `#`, spaces, double quotes and
//     backslashes need no escaping. Any other value is double-quoted, with `\` written
//     as `\\`, `"` as `\"`, newline as `\n`, carriage return as `\r` and `$` as `$$`
//     (compose's escape for a literal dollar; compose interpolates `$VAR` inside
//     double quotes). Names must match [A-Za-z_][A-Za-z0-9_.-]*.
//   - posix: `export KEY='value'`; a single quote inside the value is written as the
//     four characters ', \, ', ' (close the quotes, an escaped quote, reopen them) and
//     line breaks stay inside the quotes. Names must match [A-Za-z_][A-Za-z0-9_]*.
//   - json: an indented object; any non-empty name.
//
// Variables the syntax cannot express, and entries that are not "KEY=value", are left
// out; the rest is still written and the error returned wraps [ErrUnrepresentable] and
// names them. Values must be valid UTF-8 for the json syntax (invalid bytes become
// U+FFFD).
func Write(w io.Writer, env []string, syntax Syntax) error {
	names, values, bad := collect(env)
	var buf bytes.Buffer
	switch syntax {
	case SyntaxDocker, SyntaxPOSIX:
		for _, name := range names {
			v := values[name]
			switch {
			case syntax == SyntaxDocker && dockerName(name):
				buf.WriteString(name + "=" + dockerValue(v) + "\n")
			case syntax == SyntaxPOSIX && posixName(name):
				buf.WriteString("export " + name + "=" + posixQuote(v) + "\n")
			default:
				bad = append(bad, name)
			}
		}
	case SyntaxJSON:
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(values); err != nil {
			return fmt.Errorf("envcapture: encoding json: %w", err)
		}
	default:
		_, err := ParseSyntax(string(syntax))
		return err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("envcapture: writing %s environment: %w", syntax, err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("envcapture: %w: %s syntax cannot express %s", ErrUnrepresentable, syntax, quoteList(bad))
	}
	return nil
}

// WriteFile writes env to the file name with [Write], readable and writable by its
// owner only (the values are often secrets). It replaces name atomically, through a
// temporary file in the same directory. When Write reports [ErrUnrepresentable], the
// file is still written and that error returned.
func WriteFile(name string, env []string, syntax Syntax) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("envcapture: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("envcapture: %w", err)
	}
	werr := Write(f, env, syntax)
	if werr != nil && !errors.Is(werr, ErrUnrepresentable) {
		return werr
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("envcapture: %w", err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("envcapture: %w", err)
	}
	f = nil
	return werr
}

// collect returns the distinct names of env in first-seen order, their last values,
// and the malformed entries.
func collect(env []string) (names []string, values map[string]string, bad []string) {
	values = make(map[string]string, len(env))
	for _, kv := range env {
		name, value, ok := split(kv)
		if !ok {
			bad = append(bad, kv)
			continue
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = value
	}
	return names, values, bad
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// dockerName reports whether compose accepts name: [A-Za-z_][A-Za-z0-9_.-]*.
func dockerName(name string) bool {
	if name == "" || !isLetter(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isLetter(c) && !isDigit(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// posixName reports whether name is a shell variable name: [A-Za-z_][A-Za-z0-9_]*.
func posixName(name string) bool {
	if name == "" || !isLetter(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isLetter(c) && !isDigit(c) {
			return false
		}
	}
	return true
}

// isPlain reports whether c may appear in a bare docker value or shell word.
func isPlain(c byte) bool {
	return isLetter(c) || isDigit(c) || strings.IndexByte("-.,/:@%+=", c) >= 0
}

func dockerValue(v string) string {
	plain := true
	for i := 0; i < len(v) && plain; i++ {
		plain = isPlain(v[i])
	}
	switch {
	case plain:
		return v
	case !strings.ContainsAny(v, "'\n\r") && !strings.HasSuffix(v, `\`):
		return "'" + v + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '$':
			b.WriteString(`$$`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func posixQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
