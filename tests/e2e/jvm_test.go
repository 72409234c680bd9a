package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jvmClient is run with `java FILE.java HOST PORT` (Java 11+ single-file source launch). It does
// what a Java service does, with no proxy code of its own: an HttpURLConnection GET of /color, and
// a plain java.net.Socket speaking HTTP/1.0 by hand. The JVM takes the SOCKS settings from
// JAVA_TOOL_OPTIONS. It prints one line per client and exits 1 if either failed.
const jvmClient = `import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;

public class JvmClient {
    public static void main(String[] args) {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        boolean ok = true;
        try {
            HttpURLConnection c = (HttpURLConnection) new URL("http://" + host + ":" + port + "/color").openConnection();
            c.setConnectTimeout(30000);
            c.setReadTimeout(30000);
            String body = new String(c.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            System.out.println("http: " + c.getResponseCode() + " " + body);
        } catch (Exception e) {
            ok = false;
            System.out.println("http: failed: " + e);
        }
        try (Socket s = new Socket(host, port)) {
            s.setSoTimeout(30000);
            s.getOutputStream().write(("GET /color HTTP/1.0\r\nHost: " + host + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            String resp = new String(s.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            String status = resp.split("\r\n", 2)[0];
            String body = resp.substring(resp.indexOf("\r\n\r\n") + 4).trim();
            System.out.println("socket: " + status + " " + body);
        } catch (Exception e) {
            ok = false;
            System.out.println("socket: failed: " + e);
        }
        System.exit(ok ? 0 : 1);
    }
}
`

// TestRunJVMEnvMode runs a real JVM in env mode (--transparent=false), where it gets only
// JAVA_TOOL_OPTIONS: its HttpURLConnection and its plain Socket must both reach a Service. The
// JDK's SOCKS5 client cannot send credentials from system properties, so the JVM's SOCKS port asks
// for none and admits only the plugin user's processes: a connection from another user (root, the
// test process) must be closed without a CONNECT reply, while the child's own client, on the same
// port without credentials, gets through.
func TestRunJVMEnvMode(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("java (17 or newer) is needed for this test: %v (on Debian: apt-get install openjdk-17-jdk-headless)", err)
	}
	ns := namespace(t)
	webApp(t, ns, "web", "purple")
	host := "web." + ns

	t.Run("HttpURLConnection and Socket", func(t *testing.T) {
		src := userFile(t, "JvmClient-"+randomSuffix()+".java", jvmClient)
		r := tp(t, "run", "-n", ns, "--quiet", "--transparent=false", "--", "java", "-XX:-UsePerfData", src, host, "8080")
		if r.Code != 0 {
			t.Fatalf("the JVM did not reach the cluster: %s", r)
		}
		for _, want := range []string{"http: 200 purple", "socket: HTTP/1.0 200 OK purple"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stdout lacks %q\n%s", want, r)
			}
		}
		// The JVM announces the options it picked up; they must hold no proxy credentials.
		if !strings.Contains(r.Stderr, "Picked up JAVA_TOOL_OPTIONS: -DsocksProxyHost=127.0.0.1 -DsocksProxyPort=") ||
			strings.Contains(r.Stderr, "java.net.socks.") {
			t.Errorf("JAVA_TOOL_OPTIONS is not just the SOCKS host and port\n%s", r)
		}
	})

	t.Run("other users refused", func(t *testing.T) {
		if cred == nil {
			t.Skip("the plugin runs as this test's own user: no other user to connect as (run as root)")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// The child prints its options, waits for the test to finish its attempt (a line on stdin),
		// then uses the same port itself, without credentials.
		cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--transparent=false", "--", "sh", "-c",
			`echo "opts=$JAVA_TOOL_OPTIONS"; read go; port=${JAVA_TOOL_OPTIONS##*-DsocksProxyPort=}; `+
				`echo "own=$(curl -sS --max-time 30 --socks5-hostname "127.0.0.1:${port%% *}" http://`+host+`:8080/color)"`)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// On an early failure, end the session the way a user would, so the pod is deleted.
		defer func() { stdin.Close(); _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() {
			_ = cmd.Wait()
			t.Fatalf("the child printed nothing: %v\nstderr:\n%s", lines.Err(), stderr.String())
		}
		opts := strings.TrimPrefix(lines.Text(), "opts=")
		m := regexp.MustCompile(`^-DsocksProxyHost=127\.0\.0\.1 -DsocksProxyPort=(\d+)$`).FindStringSubmatch(opts)
		if m == nil {
			t.Fatalf("JAVA_TOOL_OPTIONS = %q, want only the SOCKS host and port", opts)
		}
		jvmSOCKS := net.JoinHostPort("127.0.0.1", m[1])

		// As root: the SOCKS5 greeting (no authentication) and a CONNECT to the Service by name.
		c, err := net.DialTimeout("tcp", jvmSOCKS, 10*time.Second)
		if err != nil {
			t.Fatalf("dialing the JVM's SOCKS port %s: %v", jvmSOCKS, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		req := []byte{5, 1, 0}                         // version 5, one method: no authentication
		req = append(req, 5, 1, 0, 3, byte(len(host))) // CONNECT to a domain name
		req = append(append(req, host...), 0x1f, 0x90) // port 8080
		_, _ = c.Write(req)                            // may fail: the connection may be closed already
		got, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection from uid 0 to the JVM's SOCKS port stayed open (read %x)", got)
		}
		if len(got) != 0 {
			t.Fatalf("a connection from uid 0 got %x from the JVM's SOCKS port (err %v), want it closed unanswered", got, err)
		}

		// The plugin's user, on the same port and without credentials, gets through.
		if _, err := io.WriteString(stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		var own string
		for lines.Scan() {
			if s, ok := strings.CutPrefix(lines.Text(), "own="); ok {
				own = s
			}
		}
		if err := cmd.Wait(); err != nil || own != "purple" {
			t.Fatalf("the child's own SOCKS client: own=%q, exit %v\nstderr:\n%s", own, err, stderr.String())
		}
	})
	noPodsLeft(t, ns, 30*time.Second)
}
