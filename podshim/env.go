package podshim

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// TokenVar is the environment variable that carries the session token to podshim. The
// env op never reports it.
const TokenVar = contract.TokenVar

func (s *Server) environ() []string {
	if s.Environ != nil {
		return s.Environ()
	}
	return os.Environ()
}

// serveEnv answers an env request with podshim's own process environment, which is
// what the kubelet computed from the pod template. TokenVar, and any other variable
// whose value contains the session token, is left out so the token never travels
// back. An environment too large for one frame is reported as a CodeError failure
// rather than sent truncated. The stream carries nothing after the response; the
// caller of serveConn closes it.
func (s *Server) serveEnv(c net.Conn) {
	env := s.environ()
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if name == TokenVar || (s.Token != "" && strings.Contains(value, s.Token)) {
			continue
		}
		out = append(out, kv)
	}
	resp := &tunnel.Response{OK: true, Env: out}
	b, err := json.Marshal(resp)
	if err != nil {
		s.reply(c, fail(tunnel.CodeError, "encoding the environment: "+err.Error()))
		return
	}
	if len(b) > tunnel.MaxFrameSize {
		msg := fmt.Sprintf("the pod's environment (%d variables, %d bytes encoded) is larger than the %d-byte frame limit",
			len(out), len(b), tunnel.MaxFrameSize)
		s.logf("%v: env: %s", c.RemoteAddr(), msg)
		s.reply(c, fail(tunnel.CodeError, msg))
		return
	}
	s.reply(c, resp)
}
