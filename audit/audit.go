// Package audit writes signerd's audit trail: one JSON line per operation, chained by hash so that a
// removed, reordered or edited line is detected by Verify. Events never hold a PIN, key material, a whole
// message or a whole token: a digest is recorded by its SHA-256, a JWT by a summary of its claims.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Field names of an event line. They are part of the audit format: tools parse them.
const (
	FieldTime     = "time"
	FieldSeq      = "seq"
	FieldIdentity = "identity"
	FieldOp       = "op"
	FieldKey      = "key"
	FieldKid      = "kid"
	FieldAlg      = "alg"
	FieldInput    = "input_sha256"
	FieldClaims   = "claims"
	FieldOutcome  = "outcome"
	FieldCode     = "code"
	FieldReason   = "reason"
	FieldPrev     = "prev"
	FieldHash     = "hash"
)

// Outcomes. A signing operation is recorded twice: OutcomeStarted just before the HSM is asked, and
// its result after; a started line without a result means the process died in between.
const (
	OutcomeStarted = "started"
	OutcomeOK      = "ok"
	OutcomeDenied  = "denied"
	OutcomeError   = "error"
)

// Claims summarises a JWT for the audit trail: who it is for and when it ends, not its whole content.
type Claims struct {
	Iss string   `json:"iss,omitempty"`
	Sub string   `json:"sub,omitempty"`
	Aud []string `json:"aud,omitempty"`
	Exp int64    `json:"exp,omitempty"`
	Jti string   `json:"jti,omitempty"`
}

// Event is one audited operation.
type Event struct {
	Time     time.Time `json:"time"`
	Seq      uint64    `json:"seq"`
	Identity string    `json:"identity"`
	Op       string    `json:"op"`
	Key      string    `json:"key,omitempty"`
	Kid      string    `json:"kid,omitempty"`
	Alg      string    `json:"alg,omitempty"`
	// Input is the hex SHA-256 of what was signed or verified (the digest, or the message).
	Input   string  `json:"input_sha256,omitempty"`
	Claims  *Claims `json:"claims,omitempty"`
	Outcome string  `json:"outcome"`
	// Code is the gRPC status code name returned to the caller.
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Prev is the Hash of the previous line ("" for the first line of a file).
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 of this line's JSON with Hash empty.
	Hash string `json:"hash"`
}

// InputHash returns the value for Event.Input.
func InputHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Log appends events to a writer. It is safe for concurrent use. Lines gather in memory and are written
// out by RecordNow, Flush and Close, and at least every FlushInterval by a background loop. Concurrent
// callers share writes: while one line is being written out, the lines recorded meanwhile gather, and the
// next write takes them all.
type Log struct {
	// mu guards the chain and the lines not yet written out.
	mu      sync.Mutex
	pending []byte
	spare   []byte // the buffer of the last write, reused for pending
	line    []byte // the buffer record encodes each event in
	prev    string
	seq     uint64
	written uint64 // seq of the last line written out
	err     error
	closed  bool // Close has stopped the writer: a later event sets err to ErrClosed
	now     func() time.Time

	// wmu serialises writes to w; it is taken before mu.
	wmu sync.Mutex
	w   io.Writer
	c   io.Closer

	stop chan struct{}
	done chan struct{}

	closeOnce sync.Once
	closeErr  error // the first Close's
}

// FlushInterval bounds how long an event stays in the buffer.
const FlushInterval = 200 * time.Millisecond

// New starts a Log writing to w, beginning a new chain; if w is an io.Closer, Close closes it.
func New(w io.Writer) *Log {
	return newLog(w, nil)
}

// newLog starts a Log writing to w that continues the chain after event last (a new chain if nil).
func newLog(w io.Writer, last *Event) *Log {
	l := &Log{w: w, now: time.Now, stop: make(chan struct{}), done: make(chan struct{})}
	if last != nil {
		l.prev, l.seq, l.written = last.Hash, last.Seq, last.Seq
	}
	if c, ok := w.(io.Closer); ok {
		l.c = c
	}
	go l.flushLoop()
	return l
}

// maxLine bounds an audit line, for Verify and for reading a trail's last line.
const maxLine = 1 << 20

// Open appends to the audit trail in the file at path, created (mode 0600) if missing. A trail that
// already has events is continued: the next line links to its last line's hash and carries the next
// sequence number, so that the file verifies as one chain across restarts. A last line that is
// incomplete (the machine lost power while writing it) or not an event is an error: signerd does not
// sign on a trail it cannot continue, and an operator should verify the file and move it aside.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	last, err := lastEvent(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	return newLog(f, last), nil
}

// lastEvent reads the last line of the trail in f; nil if f is empty.
func lastEvent(f *os.File) (*Event, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 {
		return nil, nil
	}
	start := max(0, size-maxLine-1)
	tail := make([]byte, size-start)
	if _, err := f.ReadAt(tail, start); err != nil {
		return nil, fmt.Errorf("read the last line: %w", err)
	}
	if tail[len(tail)-1] != '\n' {
		return nil, errors.New("the last line is incomplete")
	}
	line := tail[:len(tail)-1]
	i := bytes.LastIndexByte(line, '\n')
	if i < 0 && start > 0 {
		return nil, fmt.Errorf("the last line is longer than %d bytes", maxLine)
	}
	line = line[i+1:]
	var e Event
	if err := json.Unmarshal(line, &e); err != nil || e.Hash == "" {
		return nil, errors.New("the last line is not an audit event")
	}
	return &e, nil
}

func (l *Log) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.Flush()
		}
	}
}

// flushSize is how many bytes of lines Record lets gather before it writes them out itself.
const flushSize = 64 << 10

// Record appends e, filling in Time, Seq, Prev and Hash.
func (l *Log) Record(e Event) {
	l.mu.Lock()
	l.record(e)
	seq, full := l.seq, len(l.pending) >= flushSize
	l.mu.Unlock()
	if full {
		_ = l.writeOut(seq)
	}
}

// record appends e to the pending lines; the caller holds mu. Once a write failed, nothing more is
// recorded: the trail has a gap, and signerd stops signing.
func (l *Log) record(e Event) {
	if l.closed && l.err == nil {
		l.err = ErrClosed
	}
	if l.err != nil {
		return
	}
	l.seq++
	e.Time, e.Seq, e.Prev, e.Hash = l.now().UTC(), l.seq, l.prev, ""
	line, err := e.appendJSON(l.line[:0])
	if err != nil {
		l.err = err
		return
	}
	l.line = line
	// Hash is the last member and empty here: the line with its hash is this one with the hash filled
	// in, so it is marshalled once (this runs twice per signature).
	l.prev = hashLine(line)
	l.pending = append(withHash(l.pending, line, l.prev), '\n')
}

// RecordNow appends e like Record and returns once its line is written out, so that it is in the file
// (the operating system's page cache) even if the process dies a moment later. It returns the Log's
// first write error; once there is one, it records nothing more. signerd writes the "started" line of
// every signature this way before the token is asked, so that no signature leaves it unaudited.
func (l *Log) RecordNow(e Event) error {
	l.mu.Lock()
	if l.err != nil {
		defer l.mu.Unlock()
		return l.err
	}
	l.record(e)
	seq := l.seq
	l.mu.Unlock()
	return l.writeOut(seq)
}

// writeOut returns once the lines up to sequence number upTo are written out (or a write failed). If
// an earlier caller's write did not cover them, it writes out every pending line, its own and those
// that gathered while it waited for the writer.
func (l *Log) writeOut(upTo uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.written >= upTo || l.err != nil || len(l.pending) == 0 {
		defer l.mu.Unlock()
		return l.err
	}
	buf, last := l.pending, l.seq
	l.pending = l.spare[:0]
	l.mu.Unlock()

	_, err := l.w.Write(buf)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.spare = buf[:0]
	if err != nil {
		if l.err == nil {
			l.err = err
		}
		return l.err
	}
	l.written = last
	return l.err
}

// emptyHashTail ends every event line before its hash is filled in.
const emptyHashTail = `""}`

// withHash appends to dst the event line unhashed (marshalled with Hash empty) with its hash h filled
// in: the canonical form of a line, which Record writes and Verify checks.
func withHash(dst, unhashed []byte, h string) []byte {
	dst = append(dst, unhashed[:len(unhashed)-len(emptyHashTail)]...)
	dst = append(dst, '"')
	dst = append(dst, h...)
	return append(dst, '"', '}')
}

func hashLine(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// Err returns the first error the Log met writing; once it is set, events may have been lost, and
// signerd refuses to sign rather than sign unaudited.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Flush writes recorded events out and returns the first write error seen so far.
func (l *Log) Flush() error {
	l.mu.Lock()
	seq := l.seq
	l.mu.Unlock()
	return l.writeOut(seq)
}

// ErrClosed is the error of an event recorded after Close: it is not written, and Err reports it.
var ErrClosed = errors.New("audit: event recorded after the trail was closed")

// Close flushes and stops the Log. It is idempotent and safe to call concurrently: a call after the
// first (or during it, once it is done) only flushes.
func (l *Log) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		close(l.stop)
		<-l.done
		err := l.Flush()
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		if l.c != nil {
			if cerr := l.c.Close(); err == nil {
				err = cerr
			}
			l.c = nil
		}
		l.closeErr = err
	})
	if !first {
		return l.Flush()
	}
	return l.closeErr
}

// Verify reads an audit trail and checks every line's hash and its link to the previous line. It returns
// the number of events and the first problem, naming its line.
func Verify(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	sc.Split(scanLines)
	prev, n := "", 0
	for sc.Scan() {
		n++
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return n - 1, fmt.Errorf("audit: line %d: %w", n, err)
		}
		if e.Prev != prev {
			return n - 1, fmt.Errorf("audit: line %d: chain broken (prev %s, want %s)", n, e.Prev, prev)
		}
		want := e.Hash
		e.Hash = ""
		unhashed, _ := json.Marshal(e)
		if got := hashLine(unhashed); got != want {
			return n - 1, fmt.Errorf("audit: line %d: hash mismatch: line was altered", n)
		}
		// The line must be exactly what Record wrote, so that its bytes are what the hash covers.
		written := withHash(nil, unhashed, want)
		if !bytes.Equal(sc.Bytes(), written) {
			return n - 1, fmt.Errorf("audit: line %d: not in canonical form", n)
		}
		prev = want
	}
	switch err := sc.Err(); {
	case errors.Is(err, errUnterminated):
		return n, fmt.Errorf("audit: line %d: no newline at its end: the file was cut short", n+1)
	case err != nil:
		return n, errors.Join(errors.New("audit: read"), err)
	}
	return n, nil
}

// errUnterminated is scanLines' error for a last line without its newline.
var errUnterminated = errors.New("last line unterminated")

// scanLines splits lines as Record writes them, each ending in "\n": unlike bufio.ScanLines it keeps a
// "\r" (a line with one is not what Record wrote) and refuses a last line without its newline.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return 0, nil, errUnterminated
	}
	return 0, nil, nil
}
