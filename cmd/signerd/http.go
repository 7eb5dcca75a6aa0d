package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/server/wellknown"
)

// newMetrics makes the daemon's Prometheus registry: Go runtime and process metrics, whether the token
// is usable, and the versions by state; the server adds its request metrics.
func (d *daemon) newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_token_up", Help: "1 while the token answers, 0 while it is unusable."},
			func() float64 {
				if d.healthy.Load() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_keys", Help: "Keys loaded from the token."},
			func() float64 { return float64(len(d.ring.Snapshot().Names())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_published_versions", Help: "Key versions in the JWKS (pending, active, retired in grace)."},
			func() float64 { return float64(len(d.ring.Snapshot().Publishable())) }),
	)
	return reg
}

// startHTTP opens the public HTTPS listener: server-authenticated TLS only, since it serves public data.
func (d *daemon) startHTTP(cfg *config.Config) error {
	var err error
	if d.httpLis, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	base := cfg.HTTP.PublicURL
	if base == "" {
		base = "https://" + d.httpLis.Addr().String()
	}
	h := wellknown.New(wellknown.Config{Keys: d.ring, BaseURL: base, Issuer: cfg.HTTP.Issuer,
		MaxAge: cfg.HTTP.JWKSMaxAge, Metrics: promhttp.HandlerFor(d.metrics, promhttp.HandlerOpts{}), Ready: func() error {
			if !d.healthy.Load() {
				return errors.New("token unusable")
			}
			return nil
		}})
	d.httpSrv = &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return d.httpCert.Load(), nil
		}},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	return nil
}
