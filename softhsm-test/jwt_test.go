package softhsmtest_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

var b64 = base64.RawURLEncoding

// httpClient trusts only the test CA.
func (in *instance) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = in.ca.Pool()
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// jwks fetches the instance's JWKS over HTTPS.
func (in *instance) jwks(t *testing.T) (jose.JWKS, *http.Response) {
	t.Helper()
	resp, err := in.httpClient().Get(in.httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JWKS
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return set, resp
}

// TestSignJWTEveryAlgorithm mints a token with every algorithm and verifies it with golang-jwt's stock
// verifiers and the JWKS key, with VerifyJWT, and compares its form with a token made by the client's
// SigningMethod.
func TestSignJWTEveryAlgorithm(t *testing.T) {
	in := startInstance(t, instanceOptions{})
	c := in.dial(t, in.svc)
	set, _ := in.jwks(t)
	byKid := map[string]jose.JWK{}
	for _, k := range set.Keys {
		byKid[k.Kid] = k
	}
	cl := in.client(t, in.svc)
	for name, algName := range keyAlgs {
		t.Run(name, func(t *testing.T) {
			resp, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: name, ClaimsJson: `{"sub":"alice","n":12345678901234567890}`, TtlSeconds: 120})
			if err != nil {
				t.Fatalf("SignJWT(%q) = %v", name, err)
			}
			jwk, ok := byKid[resp.GetKid()]
			if !ok || jwk.Alg != algName {
				t.Fatalf("kid %q not in the JWKS with alg %s: %+v", resp.GetKid(), algName, jwk)
			}
			pub, err := jwk.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			// golang-jwt's own registered verifiers, algorithm pinned by the verifier.
			tok, err := jwt.Parse(resp.GetToken(), func(*jwt.Token) (any, error) { return pub, nil },
				jwt.WithValidMethods([]string{algName}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
			if err != nil || !tok.Valid {
				t.Fatalf("golang-jwt Parse(%s token) = %v", algName, err)
			}
			claims := tok.Claims.(jwt.MapClaims)
			exp, _ := claims.GetExpirationTime()
			iat, _ := claims.GetIssuedAt()
			if exp == nil || iat == nil || exp.Sub(iat.Time) != 120*time.Second || claims["sub"] != "alice" {
				t.Errorf("claims = %v, want sub alice and exp = iat + 120s", claims)
			}
			if !strings.Contains(tokenPart(t, resp.GetToken(), 1), "12345678901234567890") {
				t.Errorf("large integer claim was not kept exactly: %s", tokenPart(t, resp.GetToken(), 1))
			}
			v, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: resp.GetToken()})
			if err != nil || v.GetKid() != resp.GetKid() || v.GetKey() != name {
				t.Errorf("VerifyJWT = %v, %v; want kid %s key %s", v, err, resp.GetKid(), name)
			}

			// The same claims signed through the client package's SigningMethod: same header, and the
			// daemon verifies it.
			key, err := cl.Key(ctxT(t), name)
			if err != nil {
				t.Fatal(err)
			}
			own, err := key.NewToken(jwt.MapClaims{"sub": "alice", "iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix()}).SignedString(key)
			if err != nil {
				t.Fatalf("client SignedString = %v", err)
			}
			if got, want := tokenPart(t, own, 0), tokenPart(t, resp.GetToken(), 0); got != want {
				t.Errorf("client token header %s, SignJWT header %s", got, want)
			}
			if got, want := len(sigBytes(t, own)), len(sigBytes(t, resp.GetToken())); got != want {
				t.Errorf("client signature is %d bytes, SignJWT's %d", got, want)
			}
			if _, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: own}); err != nil {
				t.Errorf("VerifyJWT(client-signed token) = %v", err)
			}
		})
	}
}

func tokenPart(t *testing.T, tok string, i int) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := b64.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sigBytes(t *testing.T, tok string) []byte {
	t.Helper()
	b, err := b64.DecodeString(tok[strings.LastIndex(tok, ".")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManyES256Tokens mints 10,000 ES256 tokens through the HSM and checks that every one verifies
// with golang-jwt, including those whose r or s is shorter than 32 bytes, and is in low-S form.
func TestManyES256Tokens(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}})
	c := in.dial(t, in.svc)
	_, pub := publicKey(t, c, "es256")
	const n = 10000
	halfN := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	var short, bad atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: `{"sub":"x"}`})
				if err != nil {
					t.Errorf("SignJWT = %v", err)
					bad.Add(1)
					continue
				}
				// Not sigBytes: t.Fatal must not be called off the test's goroutine.
				tok := resp.GetToken()
				sig, err := b64.DecodeString(tok[strings.LastIndex(tok, ".")+1:])
				if err != nil || len(sig) != 64 {
					t.Errorf("token %s: signature of %d bytes (%v), want 64", tok, len(sig), err)
					bad.Add(1)
					continue
				}
				if new(big.Int).SetBytes(sig[32:]).Cmp(halfN) > 0 {
					t.Errorf("token %s: s above n/2, want low-S", tok)
					bad.Add(1)
				}
				if sig[0] == 0 || sig[32] == 0 {
					short.Add(1)
				}
				if _, err := jwt.Parse(resp.GetToken(), func(*jwt.Token) (any, error) { return pub.(*ecdsa.PublicKey), nil },
					jwt.WithValidMethods([]string{"ES256"})); err != nil {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d of %d ES256 tokens failed to verify", bad.Load(), n)
	}
	// About 0.8% of P-256 signatures have a leading zero byte in r or s; with none the test proves nothing.
	if short.Load() == 0 {
		t.Errorf("no token among %d had a short r or s; the padding path was not exercised", n)
	}
	t.Logf("%d tokens, %d with a short r or s, all verified", n, short.Load())
}

// TestVerifyJWTRefusals checks each way a token can be bad, and the reason VerifyJWT gives.
func TestVerifyJWTRefusals(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256", issuedKey: "ES256"}})
	c := in.dial(t, in.svc)
	// The issuer grant may set aud (api-a); the svc identity verifies without an issuer rule.
	good, err := in.dial(t, in.issuer).SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: issuedKey, ClaimsJson: `{"sub":"user-1","aud":"api-a"}`, TtlSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	rsTok, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: "rs256", ClaimsJson: `{"sub":"a"}`, TtlSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good.GetToken(), ".")
	rsPub, _ := publicKey(t, c, "rs256")
	rsDER := pemBody(t, rsPub.GetPublicKeyPem())

	// Tokens signed by the HSM key itself (through the client) with claims VerifyJWT must refuse.
	cl := in.client(t, in.svc)
	key, err := cl.Key(ctxT(t), "es256")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	signed := func(claims jwt.MapClaims) string {
		s, err := key.NewToken(claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs256 := func() string {
		h := b64.EncodeToString([]byte(`{"alg":"HS256","kid":"` + rsTok.GetKid() + `","typ":"JWT"}`))
		p := parts[1]
		s, _ := jwt.SigningMethodHS256.Sign(h+"."+p, rsDER)
		return h + "." + p + "." + b64.EncodeToString(s)
	}
	tests := []struct {
		name, token, audience string
		code                  codes.Code
		reason                string
	}{
		{"tampered payload", parts[0] + "." + b64.EncodeToString([]byte(`{"sub":"admin","aud":"api","exp":9999999999}`)) + "." + parts[2], "", codes.Unauthenticated, "bad signature"},
		{"tampered header", b64.EncodeToString([]byte(`{"alg":"ES256","kid":"`+good.GetKid()+`","typ":"JOSE"}`)) + "." + parts[1] + "." + parts[2], "", codes.Unauthenticated, "bad signature"},
		{"alg none", b64.EncodeToString([]byte(`{"alg":"none","kid":"`+good.GetKid()+`","typ":"JWT"}`)) + "." + parts[1] + ".", "", codes.Unauthenticated, `algorithm "none"`},
		{"HS256 with the public key as secret", hs256(), "", codes.Unauthenticated, `algorithm "HS256"`},
		{"wrong kid", b64.EncodeToString([]byte(`{"alg":"ES256","kid":"not-a-kid","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], "", codes.Unauthenticated, "unknown kid"},
		{"kid of another key", b64.EncodeToString([]byte(`{"alg":"ES256","kid":"`+rsTok.GetKid()+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], "", codes.Unauthenticated, "does not match"},
		{"extra header field", b64.EncodeToString([]byte(`{"alg":"ES256","kid":"`+good.GetKid()+`","typ":"JWT","jku":"https://evil"}`)) + "." + parts[1] + "." + parts[2], "", codes.Unauthenticated, "header"},
		{"expired", signed(jwt.MapClaims{"sub": "a", "iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}), "", codes.Unauthenticated, "expired"},
		{"not yet valid", signed(jwt.MapClaims{"sub": "a", "iat": now.Unix(), "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}), "", codes.Unauthenticated, "not valid yet"},
		{"no exp", signed(jwt.MapClaims{"sub": "a", "iat": now.Unix()}), "", codes.Unauthenticated, "exp"},
		{"wrong audience", good.GetToken(), "other-api", codes.Unauthenticated, "wrong audience"},
		{"not compact JWS", "abc.def", "", codes.Unauthenticated, "compact JWS"},
		{"JWE-shaped", "a.b.c.d.e", "", codes.Unauthenticated, "compact JWS"},
		{"empty", "", "", codes.InvalidArgument, "empty"},
		{"over 64 KiB", parts[0] + "." + strings.Repeat("A", 64<<10) + "." + parts[2], "", codes.InvalidArgument, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: tc.token, Audience: tc.audience})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.reason) {
				t.Errorf("VerifyJWT(%s) = %v %q, want %v mentioning %q", tc.name, st.Code(), st.Message(), tc.code, tc.reason)
			}
		})
	}
	if _, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: good.GetToken(), Audience: "api-a"}); err != nil {
		t.Errorf("VerifyJWT(good, aud api) after the refusals = %v", err)
	}
}

func pemBody(t *testing.T, p string) []byte {
	t.Helper()
	b64std := strings.Join(strings.Split(strings.TrimSpace(p), "\n")[1:len(strings.Split(strings.TrimSpace(p), "\n"))-1], "")
	der, err := base64.StdEncoding.DecodeString(b64std)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParsePKIXPublicKey(der); err != nil {
		t.Fatal(err)
	}
	return der
}

// TestJWTGrantPolicy enforces the issuer grant's rules: each violation is refused with the rule it
// broke and audited as denied; a conforming request gets iss stamped, a jti and the default TTL.
func TestJWTGrantPolicy(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", issuedKey: "ES256"}})
	c := in.dial(t, in.issuer)
	tests := []struct {
		name, claims string
		ttl          int64
		code         codes.Code
		reason       string
	}{
		{"wrong iss", `{"sub":"user-1","iss":"https://evil"}`, 0, codes.PermissionDenied, "iss"},
		{"unlisted aud", `{"sub":"user-1","aud":["api-a","api-z"]}`, 0, codes.PermissionDenied, "aud"},
		{"sub outside pattern", `{"sub":"admin"}`, 0, codes.PermissionDenied, "sub"},
		{"no sub", `{}`, 0, codes.PermissionDenied, "sub"},
		{"ttl over max", `{"sub":"user-1"}`, 601, codes.PermissionDenied, "max_ttl"},
		{"forbidden claim", `{"sub":"user-1","admin":true}`, 0, codes.PermissionDenied, "admin"},
		{"caller sets exp", `{"sub":"user-1","exp":1}`, 0, codes.PermissionDenied, "exp"},
		{"caller sets jti", `{"sub":"user-1","jti":"x"}`, 0, codes.PermissionDenied, "jti"},
		{"claims not an object", `["sub"]`, 0, codes.InvalidArgument, "JSON object"},
		{"negative ttl", `{"sub":"user-1"}`, -5, codes.InvalidArgument, "ttl"},
		{"key outside grant", ``, 0, codes.PermissionDenied, "may not"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := issuedKey
			if tc.name == "key outside grant" {
				key = "es256"
			}
			_, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: key, ClaimsJson: tc.claims, TtlSeconds: tc.ttl})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.reason) {
				t.Errorf("SignJWT(%s) = %v %q, want %v mentioning %q", tc.name, st.Code(), st.Message(), tc.code, tc.reason)
			}
		})
	}
	resp, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: issuedKey, ClaimsJson: `{"sub":"user-42","aud":["api-a","api-b"],"iss":"https://issuer.test"}`})
	if err != nil {
		t.Fatalf("conforming SignJWT = %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(tokenPart(t, resp.GetToken(), 1)), &claims); err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != "https://issuer.test" || claims["jti"] == nil || claims["exp"].(float64)-claims["iat"].(float64) != 120 {
		t.Errorf("claims = %v, want iss stamped, a jti and the 2m default TTL", claims)
	}
	if _, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: resp.GetToken(), Audience: "api-b"}); err != nil {
		t.Errorf("VerifyJWT(conforming) = %v", err)
	}
	// A token from the svc identity (no issuer rule) has no iss: the issuer grant refuses to accept it.
	svcTok, err := in.dial(t, in.svc).SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: issuedKey, ClaimsJson: `{"sub":"user-1"}`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: svcTok.GetToken()}); !strings.Contains(status.Convert(err).Message(), "iss") {
		t.Errorf("VerifyJWT(token without the grant's iss) = %v, want a wrong-issuer refusal", err)
	}

	// Every refusal above is in the audit trail as denied, with the rule.
	denied := auditEvents(t, in, func(e map[string]any) bool { return e["op"] == "sign_jwt" && e["outcome"] == "denied" })
	if len(denied) < 9 {
		t.Errorf("audit trail has %d denied sign_jwt events, want at least 9", len(denied))
	}
	ok := auditEvents(t, in, func(e map[string]any) bool {
		cl, _ := e["claims"].(map[string]any)
		return e["op"] == "sign_jwt" && e["outcome"] == "ok" && cl["sub"] == "user-42" && cl["jti"] != nil
	})
	if len(ok) != 1 {
		t.Errorf("audit trail has %d ok events for the conforming token, want 1 with sub and jti", len(ok))
	}
}

// auditEvents reads the instance's audit trail (after the daemon flushed it) and returns matching events.
func auditEvents(t *testing.T, in *instance, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	deadline := time.Now().Add(3 * time.Second)
	for {
		out = out[:0]
		f, err := os.Open(filepath.Join(in.dir, "audit.log"))
		if err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
			for sc.Scan() {
				var e map[string]any
				if json.Unmarshal(sc.Bytes(), &e) == nil && match(e) {
					out = append(out, e)
				}
			}
			f.Close()
		}
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJWKSEndpoint checks the JWKS document: exactly the published versions, cache headers, ETag and
// 304 on If-None-Match, and the discovery document pointing at it.
func TestJWKSEndpoint(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256", "ed": "EdDSA"}})
	c := in.dial(t, in.svc)
	set, resp := in.jwks(t)
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=90" {
		t.Errorf("Cache-Control = %q, want public, max-age=90", cc)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Errorf("ETag %q, Content-Type %q", etag, resp.Header.Get("Content-Type"))
	}
	want := map[string]bool{}
	for _, k := range []string{"es256", "rs256", "ed"} {
		pk, pub := publicKey(t, c, k)
		want[pk.GetKid()] = true
		for _, j := range set.Keys {
			if j.Kid == pk.GetKid() {
				got, err := j.PublicKey()
				if err != nil || !samePublic(got, pub) || j.Use != "sig" || j.Alg != pk.GetAlg() {
					t.Errorf("JWK for %s = %+v (%v), want the key's public half, use sig, alg %s", k, j, err, pk.GetAlg())
				}
			}
		}
	}
	if len(set.Keys) != len(want) {
		t.Errorf("JWKS has %d keys, want exactly %d", len(set.Keys), len(want))
	}
	for _, j := range set.Keys {
		if !want[j.Kid] {
			t.Errorf("JWKS has unexpected kid %s", j.Kid)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, in.httpURL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", etag)
	r304, err := in.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r304.Body)
	r304.Body.Close()
	if r304.StatusCode != http.StatusNotModified || len(body) != 0 || r304.Header.Get("ETag") != etag {
		t.Errorf("If-None-Match: status %d, %d bytes, ETag %q; want 304, empty, %q", r304.StatusCode, len(body), r304.Header.Get("ETag"), etag)
	}
	disc, err := in.httpClient().Get(in.httpURL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	_ = json.NewDecoder(disc.Body).Decode(&d)
	disc.Body.Close()
	if d.JWKSURI != in.httpURL+"/.well-known/jwks.json" {
		t.Errorf("discovery jwks_uri = %q, want %q", d.JWKSURI, in.httpURL+"/.well-known/jwks.json")
	}
	for path, code := range map[string]int{"/healthz": 200, "/readyz": 200, "/nope": 404} {
		r, err := in.httpClient().Get(in.httpURL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != code {
			t.Errorf("GET %s = %d, want %d", path, r.StatusCode, code)
		}
	}
	mresp, err := in.httpClient().Get(in.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{"signerd_token_up 1", "signerd_keys 3", `signerd_grpc_requests_total{code="OK",method="/signer.v1.Signer/GetPublicKey"}`, "signerd_signs_in_flight"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	r, err := in.httpClient().Post(in.httpURL+"/.well-known/jwks.json", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST jwks = %d, want 405", r.StatusCode)
	}
}

func samePublic(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

// TestJOSEInterop verifies SignJWT tokens of every algorithm with an independent JOSE implementation:
// the npm "jose" package, fetching the JWKS over HTTPS. It needs node and npm (the machine's, or
// Debian's, which .ci/run installs where there are none) and the npm registry. Where SoftHSM is
// required (make test, CI), it is required too: it fails rather than skips without them.
func TestJOSEInterop(t *testing.T) {
	skip := t.Skipf
	if os.Getenv(softhsmtest.RequireEnv) == "1" {
		skip = t.Fatalf
	}
	if _, err := exec.LookPath("npm"); err != nil {
		skip("node/npm not installed: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	npm := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", dir, "jose@5")
	if out, err := npm.CombinedOutput(); err != nil {
		skip("npm install jose failed (registry unreachable?): %v\n%s", err, out)
	}
	in := startInstance(t, instanceOptions{})
	c := in.dial(t, in.svc)
	var tokens []string
	for name := range keyAlgs {
		resp, err := c.SignJWT(ctxT(t), &signerv1.SignJWTRequest{Key: name, ClaimsJson: fmt.Sprintf(`{"sub":%q}`, name)})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, resp.GetToken())
	}
	script := filepath.Join(dir, "verify.mjs")
	if err := os.WriteFile(script, []byte(`
import { createRemoteJWKSet, jwtVerify } from 'jose';
const [jwksURL, ...tokens] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksURL));
let failed = 0;
for (const t of tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(t, jwks);
    console.log('ok', protectedHeader.alg, payload.sub);
  } catch (e) { failed++; console.log('FAIL', e.code, e.message); }
}
process.exit(failed ? 1 : 0);
`), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, in.ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	node := exec.Command("node", append([]string{script, in.httpURL + "/.well-known/jwks.json"}, tokens...)...)
	node.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile, "NODE_PATH="+filepath.Join(dir, "node_modules"))
	node.Dir = dir
	out, err := node.CombinedOutput()
	if err != nil {
		t.Fatalf("npm jose refused signerd tokens: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "ok "); n != len(keyAlgs) {
		t.Errorf("npm jose verified %d tokens, want %d:\n%s", n, len(keyAlgs), out)
	}
	t.Logf("npm jose:\n%s", out)
}
