package envcapture_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
)

var allSyntaxes = []envcapture.Syntax{envcapture.SyntaxDocker, envcapture.SyntaxPOSIX, envcapture.SyntaxJSON}

// trickyValues are values every syntax must carry unchanged.
var trickyValues = []struct {
	name, value string
}{
	{"plain", "value"},
	{"empty", ""},
	{"url", "postgres://user:pa%40ss@db.ns.svc:5432/app?sslmode=disable"},
	{"spaces inside", "hello world"},
	{"leading and trailing spaces", "  padded  "},
	{"only spaces", "   "},
	{"tab", "a\tb"},
	{"newline", "line1\nline2"},
	{"trailing newline", "pem\n"},
	{"crlf", "a\r\nb"},
	{"pem", "-----BEGIN KEY-----\nMIIB+abc/def==\n-----END KEY-----\n"},
	{"single quote", "it's"},
	{"only single quote", "'"},
	{"double quotes", `say "hi"`},
	{"only double quote", `"`},
	{"both quotes", `it's "quoted"`},
	{"both quotes and newline", "'a'\n\"b\""},
	{"dollar", "$HOME"},
	{"double dollar", "$$"},
	{"braces", "${X}"},
	{"braces with default", "${X:-default}"},
	{"dollar and newline", "a$b\n$$c\n${d}"},
	{"dollar and single quote", "it's $5"},
	{"trailing dollar", "cost$"},
	{"equals", "a=b=c"},
	{"leading equals", "=x"},
	{"hash", "#not-a-comment"},
	{"space hash", "a #b"},
	{"backslash", `C:\Users\me`},
	{"trailing backslash", `C:\`},
	{"trailing backslash and quote", `it's\`},
	{"double backslash", `\\`},
	{"backslash n literal", `a\nb`},
	{"backslash quote", `\"`},
	{"backslash dollar", `\$X`},
	{"backslash before newline", "a\\\nb"},
	{"unicode", "grüße 🚀"},
	{"unicode with quote and newline", "grüße 'n'\n🚀"},
	{"json", `{"a": [1, 2], "b": "c"}`},
	{"shell metacharacters", "a;b&c|d<e>f(g)h`i`*?~!"},
	{"export word", "export FOO=bar"},
}

func TestRoundTrip(t *testing.T) {
	for _, syntax := range allSyntaxes {
		t.Run(string(syntax), func(t *testing.T) {
			for _, tv := range trickyValues {
				t.Run(tv.name, func(t *testing.T) {
					env := []string{"V=" + tv.value}
					var buf bytes.Buffer
					if err := envcapture.Write(&buf, env, syntax); err != nil {
						t.Fatalf("Write: %v", err)
					}
					got, err := envcapture.Read(bytes.NewReader(buf.Bytes()), syntax)
					if err != nil {
						t.Fatalf("Read: %v\nfile:\n%s", err, buf.String())
					}
					if !slices.Equal(got, env) {
						t.Errorf("round trip = %q, want %q\nfile:\n%s", got, env, buf.String())
					}
				})
			}
			t.Run("all at once", func(t *testing.T) {
				var env []string
				for i, tv := range trickyValues {
					env = append(env, "V"+string(rune('A'+i%26))+strings.Repeat("_", i/26)+"="+tv.value)
				}
				env = append(env, "lower.dots-dashes_ok=1")
				if syntax == envcapture.SyntaxPOSIX {
					env = env[:len(env)-1]
				}
				var buf bytes.Buffer
				if err := envcapture.Write(&buf, env, syntax); err != nil {
					t.Fatalf("Write: %v", err)
				}
				got, err := envcapture.Read(&buf, syntax)
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				want := env
				if syntax == envcapture.SyntaxJSON {
					want = slices.Sorted(slices.Values(env))
				}
				if !slices.Equal(got, want) {
					t.Errorf("round trip = %q, want %q", got, want)
				}
			})
		})
	}
}

// TestPOSIXShell checks that a real shell sourcing the posix file sees every value
// exactly.
func TestPOSIXShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("this test needs a POSIX shell: %v", err)
	}
	for _, tv := range trickyValues {
		t.Run(tv.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "env.sh")
			if err := envcapture.WriteFile(file, []string{"V=" + tv.value}, envcapture.SyntaxPOSIX); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-c", `. "$1" && printf '%s' "$V"`, "sh", file)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "X=expanded", "HOME=/home"}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("sourcing: %v", err)
			}
			if string(out) != tv.value {
				t.Errorf("shell saw %q, want %q", out, tv.value)
			}
		})
	}
}

func TestWriteEncoding(t *testing.T) {
	tests := []struct {
		name   string
		syntax envcapture.Syntax
		env    []string
		want   string
	}{
		{"docker bare", envcapture.SyntaxDocker, []string{"A=abc-1.2_x/y:z@h%20+q=r,s"}, "A=abc-1.2_x/y:z@h%20+q=r,s\n"},
		{"docker empty", envcapture.SyntaxDocker, []string{"A="}, "A=\n"},
		{"docker single for dollar", envcapture.SyntaxDocker, []string{"A=$HOME ${X} $$"}, "A='$HOME ${X} $$'\n"},
		{"docker single for hash and spaces", envcapture.SyntaxDocker, []string{"A= a #b "}, "A=' a #b '\n"},
		{"docker single for double quote and backslash", envcapture.SyntaxDocker, []string{`A=say "hi" \n`}, `A='say "hi" \n'` + "\n"},
		{"docker single for unicode", envcapture.SyntaxDocker, []string{"A=grüße 🚀"}, "A='grüße 🚀'\n"},
		{"docker double for single quote", envcapture.SyntaxDocker, []string{`A=it's $5 "x" \`}, `A="it's $$5 \"x\" \\"` + "\n"},
		{"docker double for newline", envcapture.SyntaxDocker, []string{"A=a\nb\r\n${X}"}, `A="a\nb\r\n$${X}"` + "\n"},
		{"docker double for trailing backslash", envcapture.SyntaxDocker, []string{`A=C:\`}, `A="C:\\"` + "\n"},
		{"docker keeps order", envcapture.SyntaxDocker, []string{"B=2", "A=1"}, "B=2\nA=1\n"},
		{"docker duplicate last wins", envcapture.SyntaxDocker, []string{"A=1", "B=2", "A=3"}, "A=3\nB=2\n"},
		{"posix", envcapture.SyntaxPOSIX, []string{"A=plain", "B=", "C=it's\n$X"}, "export A='plain'\nexport B=''\nexport C='it'\\''s\n$X'\n"},
		{"json sorted", envcapture.SyntaxJSON, []string{"B=<&>", "A=x\ny"}, "{\n  \"A\": \"x\\ny\",\n  \"B\": \"<&>\"\n}\n"},
		{"json empty", envcapture.SyntaxJSON, nil, "{}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := envcapture.Write(&buf, tt.env, tt.syntax); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("Write = %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestWriteUnrepresentable(t *testing.T) {
	env := []string{"GOOD=1", "my-var=2", "my.var=3", "1ST=4", "has space=5", "NOEQUALS", "=x", "LAST=6"}
	tests := []struct {
		syntax      envcapture.Syntax
		wantWritten []string
		wantNamed   []string
	}{
		{envcapture.SyntaxDocker, []string{"GOOD=1", "my-var=2", "my.var=3", "LAST=6"}, []string{`"1ST"`, `"has space"`, `"NOEQUALS"`, `"=x"`}},
		{envcapture.SyntaxPOSIX, []string{"GOOD=1", "LAST=6"}, []string{`"my-var"`, `"my.var"`, `"1ST"`, `"has space"`, `"NOEQUALS"`}},
		{envcapture.SyntaxJSON, []string{"1ST=4", "GOOD=1", "LAST=6", "has space=5", "my-var=2", "my.var=3"}, []string{`"NOEQUALS"`, `"=x"`}},
	}
	for _, tt := range tests {
		t.Run(string(tt.syntax), func(t *testing.T) {
			var buf bytes.Buffer
			err := envcapture.Write(&buf, env, tt.syntax)
			if !errors.Is(err, envcapture.ErrUnrepresentable) {
				t.Fatalf("Write error = %v, want ErrUnrepresentable", err)
			}
			for _, n := range tt.wantNamed {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("error %q does not name %s", err, n)
				}
			}
			got, rerr := envcapture.Read(&buf, tt.syntax)
			if rerr != nil {
				t.Fatalf("Read: %v", rerr)
			}
			if !slices.Equal(got, tt.wantWritten) {
				t.Errorf("written %q, want %q", got, tt.wantWritten)
			}
		})
	}
}

func TestParseSyntax(t *testing.T) {
	tests := []struct {
		in      string
		want    envcapture.Syntax
		wantErr bool
	}{
		{"docker", envcapture.SyntaxDocker, false},
		{"posix", envcapture.SyntaxPOSIX, false},
		{"json", envcapture.SyntaxJSON, false},
		{"", "", true},
		{"Docker", "", true},
		{"dotenv", "", true},
	}
	for _, tt := range tests {
		got, err := envcapture.ParseSyntax(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseSyntax(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "docker, posix, json") {
			t.Errorf("ParseSyntax(%q) error %q does not name the valid values", tt.in, err)
		}
	}
	var buf bytes.Buffer
	if err := envcapture.Write(&buf, []string{"A=1"}, "yaml"); err == nil || buf.Len() != 0 {
		t.Errorf("Write with an unknown syntax = %v, wrote %q; want an error and nothing written", err, buf.String())
	}
	if _, err := envcapture.Read(strings.NewReader("A=1\n"), "yaml"); err == nil {
		t.Error("Read with an unknown syntax succeeded")
	}
}

func TestRead(t *testing.T) {
	tests := []struct {
		name    string
		syntax  envcapture.Syntax
		in      string
		want    []string
		wantErr string // substring; "" means success
	}{
		{"docker comments and blanks", envcapture.SyntaxDocker, "# header\n\n  A=1 # trailing\r\nB='x' # c\n", []string{"A=1", "B=x"}, ""},
		{"docker export prefix", envcapture.SyntaxDocker, "export A=1\n", []string{"A=1"}, ""},
		{"docker blanks around value", envcapture.SyntaxDocker, "A=  a b  \n", []string{"A=a b"}, ""},
		{"docker hash without space", envcapture.SyntaxDocker, "A=a#b\n", []string{"A=a#b"}, ""},
		{"docker no final newline", envcapture.SyntaxDocker, "A=1", []string{"A=1"}, ""},
		{"docker double escapes", envcapture.SyntaxDocker, `A="\t\a\b\f\v\$X\q\0"`, []string{"A=\t\a\b\f\v$X\\q\\0"}, ""},
		{"docker single escaped quote", envcapture.SyntaxDocker, `A='a\'b\n'`, []string{`A=a'b\n`}, ""},
		{"docker multi-line double", envcapture.SyntaxDocker, "A=\"a\nb\"\nB=2\n", []string{"A=a\nb", "B=2"}, ""},
		{"docker duplicate", envcapture.SyntaxDocker, "A=1\nB=2\nA=3\n", []string{"A=3", "B=2"}, ""},
		{"docker interpolation bare", envcapture.SyntaxDocker, "A=$B\n", nil, "interpolation"},
		{"docker interpolation double", envcapture.SyntaxDocker, `A="${B}"`, nil, "interpolation"},
		{"docker lone dollar", envcapture.SyntaxDocker, `A="x$"`, nil, "interpolation"},
		{"docker unterminated", envcapture.SyntaxDocker, "A='abc\n", nil, "unterminated"},
		{"docker junk after quote", envcapture.SyntaxDocker, "A='a' b\n", nil, "after the value"},
		{"docker no equals", envcapture.SyntaxDocker, "A\n", nil, "NAME=value"},
		{"docker bad name", envcapture.SyntaxDocker, "A B=1\n", nil, "NAME=value"},
		{"docker error line number", envcapture.SyntaxDocker, "A=1\n\"B\"=2\n", nil, "line 2"},
		{"posix mixed word", envcapture.SyntaxPOSIX, "export A=ab'c d'\\'e\n", []string{"A=abc d'e"}, ""},
		{"posix comments", envcapture.SyntaxPOSIX, "# x\nexport A='1' # y\n", []string{"A=1"}, ""},
		{"posix not export", envcapture.SyntaxPOSIX, "A='1'\n", nil, "export"},
		{"posix expansion", envcapture.SyntaxPOSIX, "export A=$B\n", nil, "unsupported character"},
		{"posix unterminated", envcapture.SyntaxPOSIX, "export A='1\n", nil, "unterminated"},
		{"posix bad name", envcapture.SyntaxPOSIX, "export my-var='1'\n", nil, "NAME=value"},
		{"json", envcapture.SyntaxJSON, `{"B":"2","A":"1"}`, []string{"A=1", "B=2"}, ""},
		{"json array", envcapture.SyntaxJSON, `["A=1"]`, nil, "json"},
		{"json null", envcapture.SyntaxJSON, `null`, nil, "not an object"},
		{"json number value", envcapture.SyntaxJSON, `{"A":1}`, nil, "json"},
		{"json trailing data", envcapture.SyntaxJSON, `{"A":"1"} {}`, nil, "json"},
		{"json empty name", envcapture.SyntaxJSON, `{"":"1"}`, nil, "invalid name"},
		{"json name with equals", envcapture.SyntaxJSON, `{"A=B":"1"}`, nil, "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := envcapture.Read(strings.NewReader(tt.in), tt.syntax)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Read = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Read = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, ".env")
	if err := os.WriteFile(name, []byte("OLD=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := envcapture.WriteFile(name, []string{"SECRET=p@ss word"}, envcapture.SyntaxDocker); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %v, want 0600", perm)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "SECRET='p@ss word'\n" {
		t.Errorf("content = %q", b)
	}

	err = envcapture.WriteFile(name, []string{"A=1", "a-b=2"}, envcapture.SyntaxPOSIX)
	if !errors.Is(err, envcapture.ErrUnrepresentable) {
		t.Errorf("WriteFile = %v, want ErrUnrepresentable", err)
	}
	if b, _ := os.ReadFile(name); string(b) != "export A='1'\n" {
		t.Errorf("content after a partial write = %q", b)
	}

	if err := envcapture.WriteFile(name, []string{"A=1"}, "yaml"); err == nil {
		t.Error("WriteFile with an unknown syntax succeeded")
	}
	if b, _ := os.ReadFile(name); string(b) != "export A='1'\n" {
		t.Errorf("a failed WriteFile changed the file to %q", b)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only .env (temporary files left behind)", entries)
	}

	if err := envcapture.WriteFile(filepath.Join(dir, "missing", "x"), nil, envcapture.SyntaxJSON); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteFile in a missing directory = %v, want ErrNotExist", err)
	}
}
