package realpaths

import "testing"

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		target string
		ok     bool
	}{
		{"/etc/app", true},
		{"/var/run/secrets/kubernetes.io/serviceaccount", true},
		{"/data", true},
		{"/", false},
		{"relative/path", false},
		{"/etc/../etc/app", false},
		{"/etc/app/", false},
		{"/proc", false},
		{"/proc/sys/x", false},
		{"/dev/shm", false},
		{"/sys/fs/cgroup", false},
		{"/devices", true},
	} {
		if err := Check(c.target); (err == nil) != c.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", c.target, err, c.ok)
		}
	}
}

func TestSorted(t *testing.T) {
	got, err := sorted([]Mount{{"/c/1", "/etc/app/x"}, {"/c/2", "/etc/app"}, {"/c/3", "/data"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/data", "/etc/app", "/etc/app/x"}
	for i, m := range got {
		if m.Target != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	if !nested("/etc/app/x", got) || nested("/etc/app", got) || nested("/etc/apple", []Mount{{"/c", "/etc/app"}}) {
		t.Error("nested is wrong")
	}
	for _, bad := range [][]Mount{
		{{"/c", "/a"}, {"/d", "/a"}},
		{{"relative", "/a"}},
		{{"/c", "/proc/a"}},
	} {
		if _, err := sorted(bad); err == nil {
			t.Errorf("sorted(%v) accepted", bad)
		}
	}
}
