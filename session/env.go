package session

import (
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Endpoints are the laptop-side addresses and credentials a child is given.
type Endpoints struct {
	SOCKS, HTTP, DNS   string // host:port on loopback
	Username, Password string // per-session proxy credentials
	// JavaSOCKS is host:port on loopback of the SOCKS5 proxy for JVMs: it asks for no
	// credentials (the JDK's SOCKS5 client sends them only from a java.net.Authenticator) and
	// accepts only connections from processes of the user running kubectl-tp. Empty where that
	// check is not possible (no /proc/net/tcp): JAVA_TOOL_OPTIONS is then left as it is.
	JavaSOCKS      string
	Namespace, Pod string
	// Root and Mounts are the local copy of the workload's volumes (empty without --from).
	Root   string
	Mounts []string
}

// noProxy keeps loopback traffic away from the proxies.
const noProxy = "localhost,127.0.0.0/8,::1"

// ChildEnv returns base with the session's variables set (replacing any earlier value) and, when
// e.JavaSOCKS is set, the JVM's SOCKS host and port appended to JAVA_TOOL_OPTIONS. No credential
// goes into JAVA_TOOL_OPTIONS: the JDK would not send them, and JavaSOCKS needs none. The JDK's
// own defaults (socksNonProxyHosts, http.nonProxyHosts) already keep loopback off the proxy, like
// NO_PROXY.
func ChildEnv(base []string, e Endpoints) []string {
	user := url.UserPassword(e.Username, e.Password)
	httpURL := (&url.URL{Scheme: "http", User: user, Host: e.HTTP}).String()
	socksURL := (&url.URL{Scheme: "socks5h", User: user, Host: e.SOCKS}).String()
	set := map[string]string{
		"HTTP_PROXY": httpURL, "http_proxy": httpURL,
		"HTTPS_PROXY": httpURL, "https_proxy": httpURL,
		"ALL_PROXY": socksURL, "all_proxy": socksURL,
		"NO_PROXY": noProxy, "no_proxy": noProxy,
		"TP_DNS":       e.DNS,
		"TP_SOCKS":     e.SOCKS,
		"TP_NAMESPACE": e.Namespace,
		"TP_POD":       e.Pod,
	}
	if e.Root != "" {
		set["TP_ROOT"] = e.Root
		set["TP_MOUNTS"] = mountsEnv(e.Mounts)
	}
	java := ""
	if javaHost, javaPort, err := net.SplitHostPort(e.JavaSOCKS); err == nil {
		java = "-DsocksProxyHost=" + javaHost + " -DsocksProxyPort=" + javaPort
	}
	out := make([]string, 0, len(base)+len(set)+1)
	javaSeen := false
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if _, replaced := set[k]; replaced {
			continue
		}
		if k == "JAVA_TOOL_OPTIONS" && java != "" {
			javaSeen = true
			kv = k + "=" + strings.TrimSpace(v+" "+java)
		}
		out = append(out, kv)
	}
	if !javaSeen && java != "" {
		out = append(out, "JAVA_TOOL_OPTIONS="+java)
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}
