package main

import (
	"errors"
	"io"
	"net"
	"sync"
)

// echoServer writes back every byte it reads on each TCP connection.
type echoServer struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// newEchoServer returns an echo server for ln; call serve to start it.
func newEchoServer(ln net.Listener) *echoServer {
	return &echoServer{ln: ln, conns: map[net.Conn]struct{}{}}
}

// serve accepts connections until close; it returns nil after close.
func (e *echoServer) serve() error {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			return nil
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			io.Copy(c, c)
			c.Close()
			e.mu.Lock()
			delete(e.conns, c)
			e.mu.Unlock()
		}()
	}
}

// close stops accepting, closes open connections and waits for their goroutines.
func (e *echoServer) close() {
	e.mu.Lock()
	e.closed = true
	e.ln.Close()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}
