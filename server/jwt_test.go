package server

import (
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
