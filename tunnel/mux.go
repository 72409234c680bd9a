package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// Mux carries tunnel streams inside one carrier stream (in production one port-forward stream)
// with yamux: opening a stream then costs no round trip to the node and no work in the API server,
// the kubelet or the container runtime, which is what bounds raw `kubectl port-forward` to a few
// hundred new connections a second. A stream's first bytes (the request frame) leave at once with
// the stream's opening frame.
//
// The carrier starts with an [OpMux] request; after the OK response both ends run a yamux
// session, the laptop as client. When the carrier breaks, every stream on it fails (as every
// port-forward stream fails when the API server connection breaks) and the next [Mux.Open] opens
// a new carrier.
//
// Flow control: each stream has its own receive window (see [MuxInitialWindow]), so one stream
// fills a long link while a stream whose reader stalls holds at most its window in memory and does
// not stall the others; windows grown past the start share one budget per carrier.
//
// Mux leaves out carrier re-dial policy beyond "the next Open tries again", several carriers, and
// any priority between streams.
type Mux struct {
	// Carrier returns a new carrier stream to podshim.
	Carrier func(ctx context.Context) (net.Conn, error)
	// Token and Version are sent in the OpMux request (the requests inside the streams carry
	// their own).
	Token, Version string

	mu   sync.Mutex
	sess *yamux.Session
}

const (
	// muxMessage is the size of a full yamux message, header included.
	muxMessage = 32 << 10
	// muxHeader is the size of yamux's message header.
	muxHeader = 12
)

// copyBufs holds buffers of one full message's payload for muxStream.ReadFrom.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, muxMessage-muxHeader); return &b }}

// Receive windows of one multiplexed stream. A stream starts with MuxInitialWindow; yamux grows a
// stream's window (doubling, up to MuxMaxWindow) when a window drains within 4 round trips, which
// only a fast stream on a long link does; growth beyond the start comes out of MuxGrowthBudget,
// shared by all streams of a carrier.
const (
	// MuxInitialWindow allows ~250 MB/s on one stream at 60 ms of loaded round trip.
	MuxInitialWindow = 16 << 20
	// MuxMaxWindow allows ~500 MB/s at 120 ms.
	MuxMaxWindow = 64 << 20
	// MuxGrowthBudget bounds the window growth of all streams of a carrier together.
	MuxGrowthBudget = 128 << 20
)

// MuxConfig returns the yamux configuration both ends use. yamux's keep-alives are off: the
// session's heartbeat (OpHello/OpPing) does that job and also keeps podshim's idle clock.
func MuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = io.Discard
	c.MaxStreamWindowSize = MuxMaxWindow
	// The container runtime reads podshim's side of the carrier 32 KiB at a time and turns each
	// read into one frame that every hop up to the laptop handles: messages of exactly 32 KiB,
	// header included, keep that to one frame per message (see muxStream.ReadFrom).
	c.MaxMessageSize = muxMessage
	// A large start: yamux's 256 KiB grows only when a window drains within 4 round trips of an
	// idle carrier, and under load a window update queues behind data in the API server, kubelet
	// and runtime, so 256 KiB held one stream at half of port-forward's speed here.
	c.InitialStreamWindowSize = MuxInitialWindow
	// A write to the carrier blocked this long means the path is dead; the heartbeat notices
	// sooner, this is the backstop for the pod side.
	c.ConnectionWriteTimeout = 30 * time.Second
	// Streams waiting for podshim to pick them up; podshim picks them up at once.
	c.AcceptBacklog = 1024
	c.MaxIncomingStreams = 1 << 16
	return c
}

// Open returns a new stream to podshim, opening a carrier first if there is none. ctx bounds the
// carrier's opening and the wait for a free slot in yamux's backlog of unacknowledged streams.
func (m *Mux) Open(ctx context.Context) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		sess, err := m.session(ctx)
		if err != nil {
			return nil, err
		}
		st, err := sess.OpenStream(ctx)
		if err == nil {
			return MuxStream(st), nil
		}
		m.drop(sess)
		// A carrier that died while idle is only noticed here: try once more on a new one.
		if attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("tunnel: opening a multiplexed stream: %w", err)
		}
	}
}

// Close closes the carrier and so every stream on it.
func (m *Mux) Close() error {
	m.mu.Lock()
	sess := m.sess
	m.sess = nil
	m.mu.Unlock()
	if sess != nil {
		return sess.Close()
	}
	return nil
}

func (m *Mux) drop(sess *yamux.Session) {
	m.mu.Lock()
	if m.sess == sess {
		m.sess = nil
	}
	m.mu.Unlock()
	_ = sess.Close()
}

// session returns the live yamux session, opening a carrier when there is none. Callers that
// arrive while a carrier is being opened wait for it.
func (m *Mux) session(ctx context.Context) (*yamux.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess != nil && !m.sess.IsClosed() {
		return m.sess, nil
	}
	m.sess = nil
	if m.Carrier == nil {
		return nil, errors.New("tunnel: Mux.Carrier is nil")
	}
	// The carrier's handshake is an ordinary request on a stream from Carrier.
	conn, _, err := (&Client{Open: m.Carrier, Token: m.Token, Version: m.Version}).roundTrip(ctx, &Request{Op: OpMux})
	if err != nil {
		return nil, err
	}
	sess, err := yamux.Client(conn, MuxConfig(), NewWindowBudget(MuxGrowthBudget))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel: starting yamux: %w", err)
	}
	m.sess = sess
	return sess, nil
}

// NewWindowBudget returns the memory manager factory for one yamux session: window growth of all
// its streams together may take at most limit bytes (a stream that cannot grow keeps its window);
// the notional reservation of a new stream's first window always succeeds.
func NewWindowBudget(limit int) func() (yamux.MemoryManager, error) {
	b := &windowBudget{limit: limit}
	return func() (yamux.MemoryManager, error) { return &budgetSpan{b: b}, nil }
}

// windowBudget counts the bytes of window growth reserved across a session.
type windowBudget struct {
	mu          sync.Mutex
	used, limit int
}

// budgetSpan is one stream's share of a windowBudget.
type budgetSpan struct {
	b    *windowBudget
	held int
}

// growthPriority is the priority yamux reserves window growth with (a new stream's first window
// uses 255).
const growthPriority = 128

func (s *budgetSpan) ReserveMemory(size int, prio uint8) error {
	if prio > growthPriority {
		return nil
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.b.used+size > s.b.limit {
		return errors.New("tunnel: window growth budget used up")
	}
	s.b.used += size
	s.held += size
	return nil
}

func (s *budgetSpan) ReleaseMemory(size int) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.releaseLocked(size)
}

// Done releases everything the span holds. yamux may call it more than once, from different
// goroutines (a failed open and the session's close): the later calls release nothing.
func (s *budgetSpan) Done() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.releaseLocked(s.held)
}

func (s *budgetSpan) releaseLocked(size int) {
	size = min(size, s.held)
	s.held -= size
	s.b.used -= size
}

// MuxStream adapts a yamux stream to the semantics of a TCP connection, which the proxies and
// podshim rely on: CloseWrite sends FIN after the data written so far; Close sends FIN and then,
// for a peer that is still writing, a reset, so that the peer's writes fail at once rather than
// wait for window updates that a closed reader never sends (yamux's own Close leaves it waiting);
// data already sent before the FIN is still delivered to the peer. A passed deadline fails Read
// and Write with an error that wraps os.ErrDeadlineExceeded, as net.Conn promises.
func MuxStream(s *yamux.Stream) net.Conn { return &muxStream{s} }

type muxStream struct{ *yamux.Stream }

func (s *muxStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	return n, deadlineError(err)
}

func (s *muxStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	return n, deadlineError(err)
}

// ReadFrom copies r to the stream in chunks of one full message's payload (io.Copy's own 32 KiB
// chunks would each take a full message and a 12-byte one).
func (s *muxStream) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{s}, struct{ io.Reader }{r}, *buf)
}

// CarrierFailed reports whether the carrier under the stream has closed.
func (s *muxStream) CarrierFailed() bool { return s.Stream.Session().IsClosed() }

func deadlineError(err error) error {
	if err == yamux.ErrTimeout {
		return os.ErrDeadlineExceeded
	}
	return err
}

func (s *muxStream) Close() error {
	err := s.Stream.CloseWrite()
	_ = s.Stream.Reset() // a no-op once both directions are finished
	return err
}
