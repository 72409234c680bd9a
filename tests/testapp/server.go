package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// config is what the flags and environment choose.
type config struct {
	httpAddr, httpsAddr, echoAddr, healthAddr string
	tlsNames                                  []string
	color                                     string
	// drain is how long the app keeps serving after SIGTERM; 0 shuts down at once.
	drain time.Duration
	// probeURL, when set, is requested every probeEvery (see prober).
	probeURL   string
	probeEvery time.Duration
}

// servers are the running listeners of one testapp.
type servers struct {
	// httpAddr, httpsAddr, echoAddr and healthAddr are the bound addresses, empty when disabled.
	httpAddr, httpsAddr, echoAddr, healthAddr string
	// errc receives the first error of a server that stopped on its own.
	errc chan error

	https     []*http.Server
	echo      *echoServer
	stopProbe context.CancelFunc
}

// start listens on every configured address and serves in the background.
func start(cfg config) (*servers, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("read hostname: %w", err)
	}
	cert, caPEM, err := selfSignedCert(cfg.tlsNames, time.Now())
	if err != nil {
		return nil, err
	}
	a := &app{hostname: host, color: cfg.color, caPEM: caPEM}
	s := &servers{errc: make(chan error, 4)}
	if cfg.probeURL != "" {
		a.probe = newProber(cfg.probeURL, cfg.probeEvery)
		ctx, cancel := context.WithCancel(context.Background())
		s.stopProbe = cancel
		go a.probe.run(ctx)
	}
	ok := false
	defer func() {
		if !ok {
			s.shutdown(context.Background())
		}
	}()

	listen := func(addr string) (net.Listener, string, error) {
		if addr == "" {
			return nil, "", nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, ln.Addr().String(), nil
	}
	serveHTTP := func(ln net.Listener, h http.Handler, tlsCfg *tls.Config) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsCfg}
		if tlsCfg == nil {
			// Plain HTTP also speaks HTTP/2 with prior knowledge (h2c), as gRPC servers do.
			srv.Protocols = new(http.Protocols)
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
		}
		s.https = append(s.https, srv)
		go func() {
			var err error
			if tlsCfg != nil {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				s.errc <- err
			}
		}()
	}

	var ln net.Listener
	if ln, s.httpAddr, err = listen(cfg.httpAddr); err != nil {
		return nil, err
	} else if ln != nil {
		serveHTTP(ln, a.handler(), nil)
	}
	if ln, s.httpsAddr, err = listen(cfg.httpsAddr); err != nil {
		return nil, err
	} else if ln != nil {
		serveHTTP(ln, a.handler(), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if ln, s.healthAddr, err = listen(cfg.healthAddr); err != nil {
		return nil, err
	} else if ln != nil {
		serveHTTP(ln, healthHandler(), nil)
	}
	if ln, s.echoAddr, err = listen(cfg.echoAddr); err != nil {
		return nil, err
	} else if ln != nil {
		s.echo = newEchoServer(ln)
		go func() {
			if err := s.echo.serve(); err != nil {
				s.errc <- err
			}
		}()
	}
	ok = true
	return s, nil
}

// shutdown stops accepting, lets open HTTP requests finish within ctx and closes echo connections.
func (s *servers) shutdown(ctx context.Context) error {
	var errs []error
	if s.stopProbe != nil {
		s.stopProbe()
	}
	if s.echo != nil {
		s.echo.close()
	}
	for _, srv := range s.https {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
