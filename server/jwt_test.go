package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// TestVerifyJWTOneSpelling: a token verifies only as signerd wrote it; line breaks, padding or
// non-zero trailing bits in a part (which a lenient base64 decoder skips) make it invalid, so that
// copies of one token cannot pass for different tokens.
func TestVerifyJWTOneSpelling(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	if _, err := r.ring.Create("k", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	tok, _ := r.token(t, time.Minute)
	if _, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: tok}); err != nil {
		t.Fatalf("VerifyJWT(token as signed) = %v", err)
	}
	parts := strings.Split(tok, ".")
	// An ES256 signature is 64 bytes: 86 base64url characters, the last carrying 4 unused bits.
	last := parts[2][len(parts[2])-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	flipped := alphabet[strings.IndexByte(alphabet, last)^1]
	tests := map[string]string{
		"LF in the signature":    parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:],
		"CRLF in the payload":    parts[0] + "." + parts[1][:5] + "\r\n" + parts[1][5:] + "." + parts[2],
		"padded signature":       tok + "==",
		"non-zero trailing bits": tok[:len(tok)-1] + string(flipped),
		"space":                  tok + " ",
	}
	for name, bad := range tests {
		_, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: bad})
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.HasPrefix(st.Message(), "invalid token: ") {
			t.Errorf("VerifyJWT(%s) = %v, want Unauthenticated invalid token", name, err)
		}
	}
}

// TestVerifyJWTHeaderMembers: a header holds alg, kid and typ under exactly those names (RFC 7515
// member names are case-sensitive) and as strings, and nothing else; each variant is signed by the key
// itself, so only the header check can refuse it. golang-jwt sees no alg in {"ALG": ...}, and neither
// may signerd.
func TestVerifyJWTHeaderMembers(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	if _, err := r.ring.Create("k", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	k, _ := r.ring.Snapshot().Key("k")
	now := clk.Now().Unix()
	payload := fmt.Sprintf(`{"sub":"x","iat":%d,"nbf":%d,"exp":%d}`, now, now, now+60)
	sign := func(header string) string {
		input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
		sig, err := jose.NewSigningMethod(jose.ES256).Sign(input, k.Active.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return input + "." + b64.EncodeToString(sig)
	}
	kid := k.Active.Kid
	if _, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: sign(`{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`)}); err != nil {
		t.Fatalf("VerifyJWT(signerd's header) = %v", err)
	}
	for header, reason := range map[string]string{
		`{"ALG":"ES256","KID":"` + kid + `","TYP":"JWT"}`:          `member "ALG" is not one signerd writes`,
		`{"alg":"ES256","Kid":"` + kid + `"}`:                      `member "Kid" is not one signerd writes`,
		`{"alg":"ES256","kid":"` + kid + `","crit":["exp"]}`:       `member "crit" is not one signerd writes`,
		`{"alg":"ES256","kid":"` + kid + `","typ":1}`:              `member "typ" is not a string`,
		`{"alg":["ES256"],"kid":"` + kid + `"}`:                    `member "alg" is not a string`,
		`{"alg":"ES256","kid":"` + kid + `"} {}`:                   `trailing data`,
		`["ES256"]`:                                                `not a JSON object`,
		`{"alg":"ES256"}`:                                          `header has no kid`,
		`{"alg":"ES256","kid":"` + kid + `","kid":"` + kid + `x"}`: `unknown kid`,
	} {
		_, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: sign(header)})
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), reason) {
			t.Errorf("VerifyJWT(header %s) = %v, want Unauthenticated with %q", header, err, reason)
		}
	}
}

// TestSignJWTClaimsInput: claims_json is one JSON object and nothing after it (a stray "}" or "]"
// included), and SignJWT makes no token that VerifyJWT would refuse for its size: claims that would
// make one are refused, claims just under it sign and verify.
func TestSignJWTClaimsInput(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	if _, err := r.ring.Create("k", jose.RS256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"sub":"x"}}`, `{"sub":"x"}]`, `{"sub":"x"} {}`, `{"sub":"x"} x`} {
		_, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: bad})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "trailing data") {
			t.Errorf("SignJWT(%s) = %v, want InvalidArgument trailing data", bad, err)
		}
	}
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: " {\"sub\":\"x\"} \n"}); err != nil {
		t.Errorf("SignJWT(claims with white space around) = %v", err)
	}
	claims := func(n int) string { return `{"sub":"x","pad":"` + strings.Repeat("a", n) + `"}` }
	// 49,000 bytes of claims are 65,360 of base64url: with the header and an RS256 signature, over.
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: claims(49_000)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("SignJWT(claims making a token over %d bytes) = %v, want InvalidArgument", MaxTokenBytes, err)
	}
	resp, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: claims(48_000)})
	if err != nil {
		t.Fatalf("SignJWT(claims making a token under the limit) = %v", err)
	}
	if n := len(resp.GetToken()); n > MaxTokenBytes {
		t.Fatalf("token of %d bytes, limit %d", n, MaxTokenBytes)
	}
	if err := r.verifies(resp.GetToken()); err != nil {
		t.Errorf("VerifyJWT(the largest kind of token SignJWT makes) = %v", err)
	}
}

// TestVerifyJWTNeedsAGrant: a caller that may verify no key's tokens is refused before the token is
// read, so that its requests neither check signatures nor spend the re-read of the token that an
// unknown kid may trigger, which a token of a version just made elsewhere needs.
func TestVerifyJWTNeedsAGrant(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	if _, err := r.ring.Create("k", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	tok, _ := r.token(t, time.Minute)
	parts := strings.Split(tok, ".")
	unknownKid := b64.EncodeToString([]byte(`{"alg":"ES256","kid":"nope","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]
	for _, bad := range []string{tok, unknownKid} {
		_, err := r.VerifyJWT(r.signer, &signerv1.VerifyJWTRequest{Token: bad})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("VerifyJWT by an identity without verify_jwt = %v, want PermissionDenied", err)
		}
	}
	if last := r.lastKidRefresh.Load(); last != 0 {
		t.Errorf("a refused caller's unknown kid refreshed the keys (at %d)", last)
	}
	if _, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: unknownKid}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("VerifyJWT(unknown kid) by svc = %v, want Unauthenticated", err)
	}
}
