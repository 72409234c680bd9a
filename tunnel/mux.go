package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
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
// A carrier starts with an [OpMux] request; after the OK response both ends run a yamux
// session, the laptop as client. Streams can be spread over several carriers (see
// [Mux.Carriers]): the container runtime copies each carrier in one loop, so parallel bulk
// streams on one carrier share one loop where port-forward gives each its own. When a carrier
// breaks, every stream on it fails (as every port-forward stream fails when the API server
// connection breaks) and the next [Mux.Open] uses another carrier or opens a new one.
//
// Flow control: each stream has its own receive window (see [MuxInitialWindow]), so one stream
// fills a long link while a stream whose reader stalls holds at most its window in memory and does
// not stall the others; windows grown past the start share one budget across the carriers.
//
// Mux leaves out carrier re-dial policy beyond "the next Open tries again", moving streams between
// carriers, and any priority between streams.
type Mux struct {
	// Carrier returns a new carrier stream to podshim.
	Carrier func(ctx context.Context) (net.Conn, error)
	// Token and Version are sent in the OpMux request (the requests inside the streams carry
	// their own).
	Token, Version string
	// Carriers is how many carriers streams are spread over, each new stream going to the carrier
	// with the fewest open streams (0 means 1). Carriers after the first are opened in the
	// background once the first is up, so they cost no stream a wait.
	Carriers int

	// openMu serializes the opening of a first carrier (callers that arrive meanwhile wait for
	// it); mu guards the fields below and is never held across a network round trip, so Close
	// does not wait for a dial.
	openMu  sync.Mutex
	mu      sync.Mutex
	sess    []*yamux.Session
	opening bool // carriers are being opened in the background
	closed  bool
	// stopOpening cancels the background openings when the Mux is closed.
	stopOpening context.CancelFunc

	// budget is the window growth budget all carriers share.
	budget     func() (yamux.MemoryManager, error)
	budgetOnce sync.Once
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
// shared by all streams of a Mux (on the pod side, of a podshim Server).
const (
	// MuxInitialWindow allows ~250 MB/s on one stream at 120 ms of loaded round trip. A stream
	// whose reader stalls holds at most this much in memory. At 80 ms of added round trip, where
	// the API server, kubelet and runtime each queue data too, 16 MiB held one download at ~105
	// MB/s (growth did not make up for it) and 32 MiB at ~130, as much as 64 MiB gave.
	MuxInitialWindow = 32 << 20
	// MuxMaxWindow allows ~500 MB/s at 120 ms.
	MuxMaxWindow = 64 << 20
	// MuxGrowthBudget bounds the window growth of all streams of all carriers together.
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

// Close closes the carriers and so every stream on them; Open fails afterwards.
func (m *Mux) Close() error {
	m.mu.Lock()
	all := m.sess
	m.sess, m.closed = nil, true
	if m.stopOpening != nil {
		m.stopOpening()
	}
	m.mu.Unlock()
	var err error
	for _, sess := range all {
		err = errors.Join(err, sess.Close())
	}
	return err
}

// Redial closes the current carriers (their streams end), so that the next Open opens new ones
// through Carrier: after the path to podshim changed.
func (m *Mux) Redial() {
	m.mu.Lock()
	all := m.sess
	m.sess = nil
	m.mu.Unlock()
	for _, sess := range all {
		_ = sess.Close()
	}
}

func (m *Mux) drop(sess *yamux.Session) {
	m.mu.Lock()
	m.sess = slices.DeleteFunc(m.sess, func(s *yamux.Session) bool { return s == sess })
	m.mu.Unlock()
	_ = sess.Close()
}

// session returns the live carrier with the fewest streams, opening a carrier when there is none
// (callers that arrive meanwhile wait for it) and starting the opening of another in the
// background while there are fewer than Carriers.
func (m *Mux) session(ctx context.Context) (*yamux.Session, error) {
	if sess, err, ok := m.pick(); ok {
		return sess, err
	}
	m.openMu.Lock()
	defer m.openMu.Unlock()
	if sess, err, ok := m.pick(); ok { // opened while this caller waited
		return sess, err
	}
	sess, err := m.openCarrier(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = sess.Close()
		return nil, fmt.Errorf("tunnel: opening a multiplexed stream: %w", net.ErrClosed)
	}
	m.sess = append(m.sess, sess)
	m.mu.Unlock()
	if sess, err, ok := m.pick(); ok {
		return sess, err
	}
	return nil, errors.New("tunnel: the new carrier closed at once")
}

// pick returns the live carrier with the fewest streams (ok), or the Mux's closed error (ok), or
// ok false when there is no live carrier. It starts the background opening of more carriers.
func (m *Mux) pick() (_ *yamux.Session, _ error, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("tunnel: opening a multiplexed stream: %w", net.ErrClosed), true
	}
	m.sess = slices.DeleteFunc(m.sess, (*yamux.Session).IsClosed)
	if len(m.sess) == 0 {
		return nil, nil, false
	}
	if len(m.sess) < max(m.Carriers, 1) && !m.opening {
		m.opening = true
		var bg context.Context
		bg, m.stopOpening = context.WithCancel(context.Background())
		go m.openBackground(bg)
	}
	best := m.sess[0]
	for _, sess := range m.sess[1:] {
		if sess.NumStreams() < best.NumStreams() {
			best = sess
		}
	}
	return best, nil, true
}

// openBackground opens carriers until there are Carriers or bg is cancelled. A failure leaves
// the carriers as they are (a later Open tries again).
func (m *Mux) openBackground(bg context.Context) {
	for {
		ctx, cancel := context.WithTimeout(bg, 30*time.Second)
		sess, err := m.openCarrier(ctx)
		cancel()
		m.mu.Lock()
		switch {
		case err != nil:
		case m.closed:
			_ = sess.Close()
		default:
			m.sess = append(m.sess, sess)
			if len(m.sess) < max(m.Carriers, 1) {
				m.mu.Unlock()
				continue
			}
		}
		m.opening = false
		m.stopOpening()
		m.mu.Unlock()
		return
	}
}

// openCarrier opens a carrier and starts its yamux session. The carrier's handshake is an
// ordinary request on a stream from Carrier.
func (m *Mux) openCarrier(ctx context.Context) (*yamux.Session, error) {
	if m.Carrier == nil {
		return nil, errors.New("tunnel: Mux.Carrier is nil")
	}
	conn, _, err := (&Client{Open: m.Carrier, Token: m.Token, Version: m.Version}).roundTrip(ctx, &Request{Op: OpMux})
	if err != nil {
		return nil, err
	}
	m.budgetOnce.Do(func() { m.budget = NewWindowBudget(MuxGrowthBudget) })
	sess, err := yamux.Client(conn, MuxConfig(), m.budget)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel: starting yamux: %w", err)
	}
	return sess, nil
}

// NewWindowBudget returns a memory manager factory for yamux sessions: window growth of all the
// streams of all the sessions given the same factory may take at most limit bytes together (a
// stream that cannot grow keeps its window); the notional reservation of a new stream's first
// window always succeeds.
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
