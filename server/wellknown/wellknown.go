// Package wellknown serves signerd's public HTTP side: the JWK Set of every published key version, an
// OpenID-style discovery document that points at it, liveness and readiness probes, and metrics. Everything here
// is public data, served over server-authenticated TLS; nothing here touches the HSM.
package wellknown

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
)

// Paths served.
const (
	JWKSPath      = "/.well-known/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
	HealthPath    = "/healthz"
	ReadyPath     = "/readyz"
	MetricsPath   = "/metrics"
)

// DefaultMaxAge is the JWKS Cache-Control max-age when none is configured.
const DefaultMaxAge = 5 * time.Minute

// Config configures the handler.
type Config struct {
	// Keys is the key ring whose published versions make the JWKS.
	Keys interface{ Snapshot() *keyring.Snapshot }
	// BaseURL is the public https:// URL of this listener, for jwks_uri.
	BaseURL string
	// Issuer is the discovery document's issuer; BaseURL when empty.
	Issuer string
	// MaxAge is how long verifiers may cache the JWKS.
	MaxAge time.Duration
	// Ready reports whether signerd can sign (token usable); nil means always ready.
	Ready func() error
	// Metrics, when set, serves MetricsPath (Prometheus).
	Metrics http.Handler
}

// Handler serves the well-known documents and probes.
type Handler struct {
	cfg Config
	mux *http.ServeMux

	mu     sync.Mutex
	cached *document // the JWKS of the last snapshot seen
}

type document struct {
	snap *keyring.Snapshot
	body []byte
	etag string
}

// New returns the Handler for cfg.
func New(cfg Config) *Handler {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Issuer == "" {
		cfg.Issuer = cfg.BaseURL
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc(JWKSPath, h.jwks)
	h.mux.HandleFunc(DiscoveryPath, h.discovery)
	h.mux.HandleFunc(HealthPath, func(w http.ResponseWriter, r *http.Request) {
		if onlyGet(w, r) {
			writeText(w, http.StatusOK, "ok\n")
		}
	})
	h.mux.HandleFunc(ReadyPath, h.ready)
	if cfg.Metrics != nil {
		h.mux.Handle(MetricsPath, cfg.Metrics)
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

func onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
	return false
}

func writeText(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(s))
}

// JWKS returns the JWK Set of snap's publishable versions: pending, active and retired within grace.
func JWKS(snap *keyring.Snapshot) jose.JWKS {
	set := jose.JWKS{Keys: []jose.JWK{}}
	for _, v := range snap.Publishable() {
		set.Keys = append(set.Keys, v.JWK)
	}
	return set
}

// document returns the JWKS document of the current snapshot, building it once per snapshot.
func (h *Handler) document() (*document, error) {
	snap := h.cfg.Keys.Snapshot()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached != nil && h.cached.snap == snap {
		return h.cached, nil
	}
	body, err := json.Marshal(JWKS(snap))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	h.cached = &document{snap: snap, body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}
	return h.cached, nil
}

func (h *Handler) jwks(w http.ResponseWriter, r *http.Request) {
	if !onlyGet(w, r) {
		return
	}
	doc, err := h.document()
	if err != nil {
		writeText(w, http.StatusInternalServerError, "internal error\n")
		return
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.cfg.MaxAge/time.Second)))
	hdr.Set("ETag", doc.etag)
	if etagMatches(strings.Join(r.Header.Values("If-None-Match"), ","), doc.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr.Set("Content-Type", "application/jwk-set+json")
	hdr.Set("Content-Length", strconv.Itoa(len(doc.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc.body)
	}
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 §13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func (h *Handler) discovery(w http.ResponseWriter, r *http.Request) {
	if !onlyGet(w, r) {
		return
	}
	body, _ := json.Marshal(struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}{h.cfg.Issuer, strings.TrimSuffix(h.cfg.BaseURL, "/") + JWKSPath, algNames()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.cfg.MaxAge/time.Second)))
	_, _ = w.Write(body)
}

func algNames() []string {
	var out []string
	for _, a := range jose.Algorithms() {
		out = append(out, string(a))
	}
	return out
}

func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	if !onlyGet(w, r) {
		return
	}
	if h.cfg.Ready != nil {
		if err := h.cfg.Ready(); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not ready\n")
			return
		}
	}
	writeText(w, http.StatusOK, "ready\n")
}
