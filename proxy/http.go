package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/elazarl/goproxy"
)

// HTTP is an HTTP forward proxy: absolute-form requests are forwarded and CONNECT
// requests are tunnelled (never intercepted), all through Dialer. The zero value
// needs Dialer set.
type HTTP struct {
	// Dialer opens the connections to destinations.
	Dialer Dialer
	// Username and Password require Proxy-Authorization with Basic credentials; other requests
	// get 407 Proxy Authentication Required. Both must be set unless NoAuth is: Serve fails
	// closed rather than run an open proxy by mistake.
	Username, Password string
	// NoAuth serves without authentication.
	NoAuth bool
	// Logf logs diagnostics; nil means no logging.
	Logf logger.Logf

	mu      sync.Mutex
	closed  bool
	servers []*http.Server
}

// Serve serves proxy requests on ln until Close is called (it then returns nil)
// or ln fails. It closes ln.
func (h *HTTP) Serve(ln net.Listener) error {
	if err := checkCredentials("http", h.Username, h.Password, h.NoAuth); err != nil {
		ln.Close()
		return err
	}
	p := goproxy.NewProxyHttpServer()
	p.Logger = httpLogger{h.Logf}
	p.Tr = &http.Transport{
		DialContext:         h.Dialer.DialContext,
		Proxy:               nil, // never chain to the laptop's own proxy
		MaxIdleConnsPerHost: 16,
		// An idle upstream connection holds a tunnel stream and a connection from the pod to the
		// Service; 20 s still serves a client's bursts (net/http's default is 90 s).
		IdleConnTimeout:       20 * time.Second,
		ResponseHeaderTimeout: 0,
	}
	p.ConnectDial = nil
	p.ConnectDialWithReq = func(req *http.Request, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(req.Context(), dialTimeout)
		defer cancel()
		return h.Dialer.DialContext(ctx, network, addr)
	}
	// goproxy answers 500 when the upstream round trip fails; a gateway error is 502.
	p.OnResponse().DoFunc(func(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
		if resp == nil && ctx.Error != nil {
			logf(h.Logf, "http: %s: %v", ctx.Req.URL.Host, ctx.Error)
			return goproxy.NewResponse(ctx.Req, goproxy.ContentTypeText, http.StatusBadGateway,
				"proxy: "+ctx.Error.Error()+"\n")
		}
		return resp
	})
	srv := &http.Server{
		Handler:           h.handler(p),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ln.Close()
		return nil
	}
	h.servers = append(h.servers, srv)
	h.mu.Unlock()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy: http: %w", err)
	}
	return nil
}

// Close stops every Serve call. Tunnels already established by CONNECT are left
// to finish on their own.
func (h *HTTP) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	var errs []error
	for _, s := range h.servers {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// handler checks credentials and request form before handing over to goproxy.
func (h *HTTP) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.authorized(r) {
			w.Header().Set("Proxy-Authenticate", `Basic realm="kubectl-tp"`)
			http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
			return
		}
		if r.Method == http.MethodConnect {
			if r.URL.Host == "" {
				http.Error(w, "CONNECT needs host:port", http.StatusBadRequest)
				return
			}
		} else if !r.URL.IsAbs() || r.URL.Host == "" {
			http.Error(w, "this is a proxy; send absolute-form requests (GET http://host/path)", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *HTTP) authorized(r *http.Request) bool {
	if h.NoAuth {
		return true
	}
	v := r.Header.Get("Proxy-Authorization")
	scheme, enc, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return false
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(h.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(h.Password))
	return u&p == 1
}

type httpLogger struct{ f func(string, ...any) }

func (l httpLogger) Printf(format string, args ...any) { logf(l.f, "http: "+format, args...) }

var _ goproxy.Logger = httpLogger{}

// checkCredentials refuses a proxy with a missing username or password unless noAuth says so.
func checkCredentials(kind, user, pass string, noAuth bool) error {
	if !noAuth && (user == "" || pass == "") {
		return fmt.Errorf("proxy: %s: Username and Password must both be set (or NoAuth)", kind)
	}
	return nil
}
