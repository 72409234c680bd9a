package envcapture_test

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
)

// The seed corpora of these targets are in testdata/fuzz/<target>/ and run with every
// `go test`; `make fuzz` explores from them for FUZZTIME each.

// fuzzNames are the names each syntax can express, as documented on Write.
var fuzzNames = map[envcapture.Syntax]*regexp.Regexp{
	envcapture.SyntaxDocker: regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`),
	envcapture.SyntaxPOSIX:  regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`),
	envcapture.SyntaxJSON:   regexp.MustCompile(`(?s)^.+$`),
}

var fuzzSyntaxes = []envcapture.Syntax{envcapture.SyntaxDocker, envcapture.SyntaxPOSIX, envcapture.SyntaxJSON}

// fuzzWant is what Read must return for a file Write made of env: the entries the
// syntax can express, each name once with its last value, in first-seen order (sorted
// by name for json); and whether Write had to leave something out.
func fuzzWant(env []string, syntax envcapture.Syntax) (want []string, leftOut bool) {
	var order []string
	values := map[string]string{}
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			leftOut = true
			continue
		}
		if !fuzzNames[syntax].MatchString(name) {
			// The name is still written once for json; docker and posix leave it out.
			leftOut = true
			continue
		}
		if _, seen := values[name]; !seen {
			order = append(order, name)
		}
		values[name] = value
	}
	if syntax == envcapture.SyntaxJSON {
		slices.Sort(order)
	}
	for _, name := range order {
		want = append(want, name+"="+values[name])
	}
	return want, leftOut
}

// FuzzWriteRead writes an environment (entries separated by NUL, which no environment
// value can hold) in each syntax and reads it back: Read must return exactly the
// variables the syntax can express, whatever their values (quotes, newlines, `$`,
// backslashes, `#`, blanks, any bytes; valid UTF-8 for json), and Write must report
// ErrUnrepresentable exactly when it left something out.
func FuzzWriteRead(f *testing.F) {
	for _, env := range [][]string{
		{"A=1", "B=", "C=hello world"},
		{"PEM=-----BEGIN KEY-----\nMIIB+abc/def==\n-----END KEY-----\n", "CRLF=a\r\nb"},
		{`Q=it's "quoted"`, `BS=C:\`, `BSQ=it's\`, `BSN=a\nb`, "BSNL=a\\\nb"},
		{"D=$HOME", "DD=$$", "BR=${X:-y}", "T=cost$", "MIX=a$b\n$$c\n${d}"},
		{"H=#not-a-comment", "SH=a #b", "EQ=a=b=c", "LEQ==x", "SP=  padded  ", "TAB=a\tb"},
		{"U=grüße 🚀", "UQ=grüße 'n'\n🚀", "CTL=\a\b\f\v\x1b", "BAD=\xff\xfe"},
		{"X=1", "Y=2", "X=3"},
		{"dotted.name=1", "dash-name=2", "_u=3", "9lead=4", "=empty", "noequals", "sp ace=5"},
		{"export=1", "export X=2", "exported=3"},
	} {
		f.Add(strings.Join(env, "\x00"))
	}

	f.Fuzz(func(t *testing.T, joined string) {
		env := strings.Split(joined, "\x00")
		for _, syntax := range fuzzSyntaxes {
			if syntax == envcapture.SyntaxJSON && !utf8.ValidString(joined) {
				continue // documented: invalid bytes become U+FFFD
			}
			var b bytes.Buffer
			err := envcapture.Write(&b, env, syntax)
			want, leftOut := fuzzWant(env, syntax)
			switch {
			case err != nil && !errors.Is(err, envcapture.ErrUnrepresentable):
				t.Fatalf("%s: Write: %v", syntax, err)
			case leftOut != (err != nil):
				t.Fatalf("%s: Write error %v; want one: %v (env %q)", syntax, err, leftOut, env)
			}
			got, err := envcapture.Read(bytes.NewReader(b.Bytes()), syntax)
			if err != nil {
				t.Fatalf("%s: Read of what Write wrote: %v\nenv %q\nfile:\n%s", syntax, err, env, b.Bytes())
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: round trip:\n got  %q\n want %q\nfile:\n%s", syntax, got, want, b.Bytes())
			}
		}
	})
}

// FuzzRead reads arbitrary bytes in each syntax (a user's --env-file may hold
// anything). It must never panic, and what it accepts must be what it returns again
// after Write.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		"A=1\nB=\n# comment\n\nexport C='x y' # trailing\n",
		"K='single ''quoted'\nD=\"line\\n\\t$$ \\\"q\\\" \\x\"\nBARE=a b  #c\n",
		"BAD=$HOME\n",
		"Q='unterminated\n",
		"export A='it'\\''s'\nexport B=plain\\ word\nexport C='multi\nline'\n",
		"export A=\\\nB\n",
		"A=1 B=2\n",
		"{\"A\": \"1\", \"B\": \"line\\nbreak\", \"\\u00e9\": \"\\ud800\"}",
		"{\"\": \"x\"}",
		"{\"A=B\": \"x\"}",
		"{\"A\": 1}",
		"null",
		"\xff\xfe=1\r\n",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, syntax := range fuzzSyntaxes {
			env, err := envcapture.Read(bytes.NewReader(data), syntax)
			if err != nil {
				continue
			}
			var b bytes.Buffer
			if err := envcapture.Write(&b, env, syntax); err != nil {
				t.Fatalf("%s: Write of what Read returned (%q): %v", syntax, env, err)
			}
			again, err := envcapture.Read(bytes.NewReader(b.Bytes()), syntax)
			if err != nil {
				t.Fatalf("%s: Read of what Write wrote: %v\nfile:\n%s", syntax, err, b.Bytes())
			}
			if !slices.Equal(again, env) {
				t.Fatalf("%s: Write then Read changed what Read returned:\n got  %q\n want %q", syntax, again, env)
			}
		}
	})
}
