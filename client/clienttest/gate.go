package clienttest

import (
	"crypto"
	"io"
	"sync"
	"sync/atomic"
)

// Gate holds every signature made through the signers it wraps until it is opened: set Wrap as
// Store.Wrap to test what callers see while the token is slow or every signing slot is taken.
type Gate struct {
	inside atomic.Int32
	open   chan struct{}
	once   sync.Once
}

// NewGate returns a closed Gate. Open it (tests usually defer that) so that held signatures finish.
func NewGate() *Gate { return &Gate{open: make(chan struct{})} }

// Wrap returns s with its signatures held by the gate.
func (g *Gate) Wrap(s crypto.Signer) crypto.Signer { return gated{s, g} }

// Inside returns how many signatures have reached the gate, held or let through.
func (g *Gate) Inside() int { return int(g.inside.Load()) }

// Open lets every held and later signature through. It may be called more than once.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }

type gated struct {
	crypto.Signer
	g *Gate
}

func (s gated) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.g.inside.Add(1)
	<-s.g.open
	return s.Signer.Sign(r, digest, opts)
}
