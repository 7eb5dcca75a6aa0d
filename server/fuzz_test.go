package server

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// fuzzJWT is a server with an ES256 key k and a PS256 key n (identity svc may issue and verify tokens
// of both) on a fixed clock, and a reference verifier: golang-jwt's stock parser, with the algorithm
// pinned to the kid's key and the time rules VerifyJWT applies.
type fuzzJWT struct {
	*rotationServer
	now time.Time
}

func newFuzzJWT(f *testing.F) *fuzzJWT {
	now := time.Unix(1_800_000_000, 0)
	r := newRotationServer(f, &clock{t: now})
	for name, alg := range map[string]jose.Algorithm{"k": jose.ES256, "n": jose.PS256} {
		if _, err := r.ring.Create(name, alg, 0, keyring.DefaultSettings()); err != nil {
			f.Fatal(err)
		}
	}
	return &fuzzJWT{rotationServer: r, now: now}
}

// active is the version key name signs with.
func (z *fuzzJWT) active(t testing.TB, name string) *keyring.LoadedVersion {
	t.Helper()
	k, ok := z.ring.Snapshot().Key(name)
	if !ok {
		t.Fatalf("key %q missing", name)
	}
	for _, v := range k.Publishable() {
		if v.State == keyring.Active {
			return v
		}
	}
	t.Fatalf("key %q has no active version", name)
	return nil
}

// reference verifies tok as a careful relying party would, with only published keys.
func (z *fuzzJWT) reference(tok, aud string) (jwt.MapClaims, error) {
	opts := []jwt.ParserOption{jwt.WithLeeway(z.leeway), jwt.WithTimeFunc(func() time.Time { return z.now }),
		jwt.WithIssuedAt(), jwt.WithExpirationRequired(), jwt.WithJSONNumber(), jwt.WithStrictDecoding()}
	if aud != "" {
		opts = append(opts, jwt.WithAudience(aud))
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(opts...).ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		v, ok := z.ring.Snapshot().Kid(kid)
		if !ok || !v.State.Publishable() {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		if t.Method.Alg() != string(v.Key.Alg) {
			return nil, fmt.Errorf("alg %s for a %s key", t.Method.Alg(), v.Key.Alg)
		}
		return v.Public, nil
	})
	return claims, err
}

// checkVerifyJWT calls VerifyJWT and holds it to its contract: a refusal is Unauthenticated "invalid
// token: ..." (InvalidArgument only for an empty or oversize token), and a token it accepts is one the
// reference verifier accepts too, with the claims it returns being the token's payload.
func (z *fuzzJWT) checkVerifyJWT(t *testing.T, tok, aud string) {
	resp, err := z.VerifyJWT(z.svc, &signerv1.VerifyJWTRequest{Token: tok, Audience: aud})
	if err != nil {
		st := status.Convert(err)
		switch {
		case st.Code() == codes.Unauthenticated && strings.HasPrefix(st.Message(), "invalid token: "):
		case st.Code() == codes.InvalidArgument && (tok == "" || len(tok) > MaxTokenBytes):
		default:
			t.Fatalf("VerifyJWT(%q, aud %q) = %v, want Unauthenticated invalid token", tok, aud, err)
		}
		return
	}
	if _, refErr := z.reference(tok, aud); refErr != nil {
		t.Fatalf("VerifyJWT(%q, aud %q) accepted a token that golang-jwt refuses: %v", tok, aud, refErr)
	}
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || resp.GetClaimsJson() != string(payload) {
		t.Fatalf("VerifyJWT(%q) claims = %s, want the payload %s (%v)", tok, resp.GetClaimsJson(), payload, err)
	}
}

// FuzzVerifyJWT feeds VerifyJWT arbitrary tokens and audiences, starting from real tokens of both keys
// and their near misses.
func FuzzVerifyJWT(f *testing.F) {
	z := newFuzzJWT(f)
	for _, key := range []string{"k", "n"} {
		resp, err := z.SignJWT(z.svc, &signerv1.SignJWTRequest{Key: key, ClaimsJson: `{"sub":"x"}`, TtlSeconds: 60})
		if err != nil {
			f.Fatal(err)
		}
		tok := resp.GetToken()
		parts := strings.Split(tok, ".")
		f.Add(tok, "")
		f.Add(tok, "a")
		f.Add(tok, "c")
		f.Add(parts[0]+"."+parts[1]+".", "")
		f.Add(parts[0]+"."+parts[1], "")
		f.Add("eyJhbGciOiJub25lIn0."+parts[1]+".", "")
	}
	f.Add("", "")
	f.Add("...", "")
	f.Fuzz(func(t *testing.T, tok, aud string) { z.checkVerifyJWT(t, tok, aud) })
}

// FuzzVerifyJWTSigned signs arbitrary headers and payloads with key k's active version, as a token
// that came from signerd's key would be, so that VerifyJWT's header and claims checks are reached past
// the signature, and holds VerifyJWT to the same contract.
func FuzzVerifyJWTSigned(f *testing.F) {
	z := newFuzzJWT(f)
	v := z.active(f, "k")
	now := z.now.Unix()
	hdr := fmt.Sprintf(`{"alg":"ES256","kid":%q,"typ":"JWT"}`, v.Kid)
	times := fmt.Sprintf(`"iat":%d,"nbf":%d,"exp":%d`, now, now, now+60)
	for _, seed := range []struct{ hdr, payload, aud string }{
		{hdr, `{` + times + `}`, ""},
		{hdr, `{` + times + `,"aud":"a"}`, "a"},
		{hdr, `{` + times + `,"aud":["a","b"]}`, "b"},
		{hdr, `{` + times + `,"aud":"a"}`, "b"},
		{hdr, fmt.Sprintf(`{"iat":%d,"exp":%d.5}`, now, now+1), ""},
		{hdr, fmt.Sprintf(`{"iat":%d,"exp":"%d"}`, now, now+60), ""},
		{hdr, fmt.Sprintf(`{"iat":%d,"exp":1e400}`, now), ""},
		{hdr, fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now-3600), ""},
		{hdr, fmt.Sprintf(`{"iat":%d,"nbf":%d,"exp":%d}`, now, now+3600, now+7200), ""},
		{hdr, fmt.Sprintf(`{"iat":%d}`, now), ""},
		{hdr, fmt.Sprintf(`{"iat":%d,"exp":%d,"exp":%d}`, now, now+60, now-60), ""},
		{hdr, `[]`, ""},
		{hdr, `null`, ""},
		{fmt.Sprintf(`{"alg":"ES256","kid":%q,"typ":"JWT","crit":["exp"]}`, v.Kid), `{` + times + `}`, ""},
		{fmt.Sprintf(`{"alg":"ES256","kid":%q,"KID":"x"}`, v.Kid), `{` + times + `}`, ""},
		{fmt.Sprintf(`{"alg":"PS256","kid":%q}`, v.Kid), `{` + times + `}`, ""},
		{`{"alg":"ES256"}`, `{` + times + `}`, ""},
	} {
		f.Add(seed.hdr, seed.payload, seed.aud)
	}
	method := jose.NewSigningMethod(jose.ES256)
	f.Fuzz(func(t *testing.T, header, payload, aud string) {
		input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
		sig, err := method.Sign(input, v.Signer)
		if err != nil {
			t.Fatal(err)
		}
		z.checkVerifyJWT(t, input+"."+base64.RawURLEncoding.EncodeToString(sig), aud)
	})
}

// FuzzSignVerify feeds Sign and Verify arbitrary key names, inputs, formats and signatures on an ES256
// key r. Each answers with a caller's status (never INTERNAL or UNKNOWN); a signature Sign returns
// verifies with crypto/ecdsa in the format asked for; and Verify calls a signature valid only if
// crypto/ecdsa does, strict DER or 64-byte r||s, so that no second encoding of one signature passes.
func FuzzSignVerify(f *testing.F) {
	z := newRotationServer(f, &clock{t: time.Unix(1_800_000_000, 0)})
	if _, err := z.ring.Create("r", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		f.Fatal(err)
	}
	k, _ := z.ring.Snapshot().Key("r")
	pub := k.Active.Public.(*ecdsa.PublicKey)
	digest := sha256.Sum256([]byte("m"))
	der, err := ecdsa.SignASN1(rand.Reader, k.Active.Signer.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		f.Fatal(err)
	}
	raw, err := jose.DERToRaw(der, 32)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("r", []byte("m"), false, int32(0), der)
	f.Add("r", digest[:], true, int32(1), der)
	f.Add("r", []byte("m"), false, int32(2), raw)
	f.Add("r", digest[:31], true, int32(2), append(raw, 0))
	f.Add("x", []byte{}, false, int32(7), []byte{0x30, 0x00})
	callerCodes := []codes.Code{codes.InvalidArgument, codes.PermissionDenied, codes.NotFound}
	f.Fuzz(func(t *testing.T, key string, input []byte, isDigest bool, format int32, sig []byte) {
		want := input
		if !isDigest {
			sum := sha256.Sum256(input)
			want = sum[:]
		}
		sreq := &signerv1.SignRequest{Key: key, Format: signerv1.SignatureFormat(format)}
		vreq := &signerv1.VerifyRequest{Key: key, Signature: sig, Format: signerv1.SignatureFormat(format)}
		if isDigest {
			sreq.Input, vreq.Input = &signerv1.SignRequest_Digest{Digest: input}, &signerv1.VerifyRequest_Digest{Digest: input}
		} else {
			sreq.Input, vreq.Input = &signerv1.SignRequest_Message{Message: input}, &signerv1.VerifyRequest_Message{Message: input}
		}
		joseForm := signerv1.SignatureFormat(format) == signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE
		ecdsaValid := func(sig []byte) bool {
			if !joseForm {
				return ecdsa.VerifyASN1(pub, want, sig)
			}
			if len(sig) != 64 {
				return false
			}
			return ecdsa.Verify(pub, want, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		}
		resp, err := z.Sign(z.signer, sreq)
		switch {
		case err != nil && !slices.Contains(callerCodes, status.Code(err)):
			t.Fatalf("Sign(%q, %d input bytes, digest %v, format %d) = %v, want a caller's status", key, len(input), isDigest, format, err)
		case err == nil && !ecdsaValid(resp.GetSignature()):
			t.Fatalf("Sign(%q, format %d) returned a signature crypto/ecdsa refuses: %x", key, format, resp.GetSignature())
		}
		vresp, err := z.Verify(z.signer, vreq)
		switch {
		case err != nil && !slices.Contains(callerCodes, status.Code(err)):
			t.Fatalf("Verify(%q, %d input bytes, digest %v, format %d, sig %x) = %v, want a caller's status", key, len(input), isDigest, format, sig, err)
		case err == nil && vresp.GetValid() && !ecdsaValid(sig):
			t.Fatalf("Verify(%q, format %d) called %x valid, which crypto/ecdsa refuses", key, format, sig)
		case err == nil && !vresp.GetValid() && ecdsaValid(sig) && key == "r":
			t.Fatalf("Verify(%q, format %d) called %x invalid, which crypto/ecdsa accepts", key, format, sig)
		}
	})
}
