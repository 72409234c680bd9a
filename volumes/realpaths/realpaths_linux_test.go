package realpaths

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// envReport makes the test binary a child that calls Setup and then reports on the paths in
// its arguments, one line per operation, instead of running tests.
const envReport = "REALPATHS_TEST_REPORT"

func TestMain(m *testing.M) {
	if IsProbe() {
		ProbeMain()
	}
	if os.Getenv(envReport) != "" {
		runtime.LockOSThread()
		if err := Setup(); err != nil {
			fmt.Println("setup:", err)
			os.Exit(3)
		}
		for _, op := range os.Args[1:] {
			fmt.Println(op, "=>", report(op))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// report performs one "verb:path" operation and describes its outcome.
func report(op string) string {
	verb, p, _ := strings.Cut(op, ":")
	switch verb {
	case "read":
		b, err := os.ReadFile(p)
		if err != nil {
			return "error " + errName(err)
		}
		return strings.TrimSuffix(string(b), "\n")
	case "ls":
		es, err := os.ReadDir(p)
		if err != nil {
			return "error " + errName(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return strings.Join(names, ",")
	case "write":
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			return "error " + errName(err)
		}
		return "written"
	case "cwd":
		wd, _ := os.Getwd()
		return wd
	}
	return "unknown op"
}

func errName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EROFS:
			return "EROFS"
		case syscall.EACCES:
			return "EACCES"
		case syscall.ENOENT:
			return "ENOENT"
		}
	}
	return err.Error()
}

// runChild starts the test binary under Prepare(mounts) in dir and returns its report.
func runChild(t *testing.T, dir string, mounts []Mount, ops ...string) map[string]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], ops...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envReport+"=1")
	if err := Prepare(cmd, mounts); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		op, res, ok := strings.Cut(line, " => ")
		if !ok {
			t.Fatalf("child printed %q", line)
		}
		got[op] = res
	}
	return got
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestApply runs a child in its namespaces for each layout and checks what it sees, and that
// the laptop's view did not change.
func TestApply(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatalf("this machine offers user namespaces (see the notes); Probe: %v", err)
	}
	type tc struct {
		name string
		// build makes the copies and the laptop's side below base; it returns the mounts and
		// the expected report.
		build func(t *testing.T, base string) ([]Mount, map[string]string)
	}
	cases := []tc{
		{"existing directory", func(t *testing.T, b string) ([]Mount, map[string]string) {
			write(t, b+"/copy/config.yaml", "remote")
			write(t, b+"/laptop/app/local.txt", "local")
			return []Mount{{Source: b + "/copy", Target: b + "/laptop/app"}}, map[string]string{
				"read:" + b + "/laptop/app/config.yaml":  "remote",
				"ls:" + b + "/laptop/app":                "config.yaml",
				"write:" + b + "/laptop/app/new":         "error EROFS",
				"write:" + b + "/laptop/app/config.yaml": "error EROFS",
			}
		}},
		{"missing directory in a writable one", func(t *testing.T, b string) ([]Mount, map[string]string) {
			write(t, b+"/copy/token", "tok")
			write(t, b+"/laptop/other.txt", "other")
			write(t, b+"/laptop/sub/inner.txt", "inner")
			if err := os.Symlink("sub/inner.txt", b+"/laptop/link"); err != nil {
				t.Fatal(err)
			}
			return []Mount{{Source: b + "/copy", Target: b + "/laptop/var/secrets/sa"}}, map[string]string{
				"read:" + b + "/laptop/var/secrets/sa/token": "tok",
				"read:" + b + "/laptop/other.txt":            "other",
				"read:" + b + "/laptop/link":                 "inner",
				"ls:" + b + "/laptop":                        "link,other.txt,sub,var",
				"write:" + b + "/laptop/var/secrets/sa/x":    "error EROFS",
				// the shadow of a writable directory stays writable, privately
				"write:" + b + "/laptop/scratch": "written",
			}
		}},
		{"missing directory in a read-only one", func(t *testing.T, b string) ([]Mount, map[string]string) {
			write(t, b+"/copy/a", "A")
			write(t, b+"/laptop/etc/hosts", "hosts")
			if err := os.Chmod(b+"/laptop/etc", 0o555); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(b+"/laptop/etc", 0o755) })
			return []Mount{{Source: b + "/copy", Target: b + "/laptop/etc/app"}}, map[string]string{
				"read:" + b + "/laptop/etc/app/a": "A",
				"read:" + b + "/laptop/etc/hosts": "hosts",
				"ls:" + b + "/laptop/etc":         "app,hosts",
			}
		}},
		{"single file through a symlinked directory", func(t *testing.T, b string) ([]Mount, map[string]string) {
			write(t, b+"/copy.yaml", "one file")
			write(t, b+"/real/keep", "keep")
			if err := os.Symlink("real", b+"/alias"); err != nil {
				t.Fatal(err)
			}
			return []Mount{{Source: b + "/copy.yaml", Target: b + "/alias/config.yaml"}}, map[string]string{
				"read:" + b + "/alias/config.yaml": "one file",
				"read:" + b + "/real/config.yaml":  "one file",
				"ls:" + b + "/real":                "config.yaml,keep",
				"write:" + b + "/real/config.yaml": "error EROFS",
			}
		}},
		{"file where a directory is needed, and a nested mount", func(t *testing.T, b string) ([]Mount, map[string]string) {
			write(t, b+"/laptop/conf", "a file on the laptop")
			write(t, b+"/copy/x", "outer")
			write(t, b+"/copy/inner/placeholder", "")
			write(t, b+"/copy2/y", "inner")
			return []Mount{
					{Source: b + "/copy2", Target: b + "/laptop/conf/inner"},
					{Source: b + "/copy", Target: b + "/laptop/conf"},
				}, map[string]string{
					"read:" + b + "/laptop/conf/x":       "outer",
					"read:" + b + "/laptop/conf/inner/y": "inner",
					"ls:" + b + "/laptop/conf/inner":     "y",
				}
		}},
		{"missing top-level directory, working directory kept", func(t *testing.T, b string) ([]Mount, map[string]string) {
			top := "/kubectl-tp-realpaths-test-" + filepath.Base(b)
			write(t, b+"/copy/app.conf", "top")
			return []Mount{{Source: b + "/copy", Target: top + "/config"}}, map[string]string{
				"read:" + top + "/config/app.conf": "top",
				"read:/etc/hostname":               hostname(t),
				"read:" + b + "/copy/app.conf":     "top",
				"cwd":                              b,
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			mounts, want := c.build(t, base)
			before := tree(t, base)
			ops := slices.Sorted(func(yield func(string) bool) {
				for k := range want {
					if !yield(k) {
						return
					}
				}
			})
			got := runChild(t, base, mounts, ops...)
			for _, op := range ops {
				if got[op] != want[op] {
					t.Errorf("%s: got %q, want %q", op, got[op], want[op])
				}
			}
			if after := tree(t, base); !slices.Equal(before, after) {
				t.Errorf("the laptop's files changed:\nbefore %v\nafter  %v", before, after)
			}
			for _, m := range mounts {
				if top, _, _ := strings.Cut(strings.TrimPrefix(m.Target, "/"), "/"); top != "" {
					if _, err := os.Lstat("/" + top); err == nil && !strings.HasPrefix(base, "/"+top) {
						t.Errorf("/%s exists outside the child's namespace", top)
					}
				}
			}
			if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "kubectl-tp-stage-*")); len(left) > 0 {
				t.Errorf("staging directories left behind: %v", left)
			}
		})
	}
}

func hostname(t *testing.T) string {
	b, err := os.ReadFile("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// tree lists every path below dir with its size.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d %v", p, fi.Size(), fi.Mode()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSetupFailsOnMissingCopy checks that a copy that vanished stops the child before it runs.
func TestSetupFailsOnMissingCopy(t *testing.T) {
	base := t.TempDir()
	cmd := exec.Command(os.Args[0], "cwd")
	cmd.Env = append(os.Environ(), envReport+"=1")
	if err := Prepare(cmd, []Mount{{Source: base + "/gone", Target: base + "/target"}}); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(string(out), base+"/target: its copy") {
		t.Fatalf("want setup to fail naming the target, got %v: %s", err, out)
	}
}
