package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
)

// MaxTokenBytes caps a JWT given to VerifyJWT and one SignJWT makes (and so the claims given to it).
const MaxTokenBytes = signerv1.MaxTokenBytes

var b64 = base64.RawURLEncoding

// b64Strict decodes a token's parts: unpadded base64url whose unused trailing bits are zero, so that each
// part has one spelling (see verifySignature for the characters it would otherwise skip).
var b64Strict = base64.RawURLEncoding.Strict()

// jwtHeader is the only header signerd writes, and the only one it accepts: callers cannot add fields.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// SignJWT implements signer.v1.Signer. signerd writes the header (alg of the key, kid of the active
// version, typ JWT) and the time claims, applies the caller's grant (issuer, audiences, subject, TTL,
// forbidden claims, jti), and signs the JWS signing input in the token.
func (s *Server) SignJWT(ctx context.Context, req *signerv1.SignJWTRequest) (*signerv1.SignJWTResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: string(authz.OpSignJWT), Key: req.GetKey()}
	resp, err := s.signJWT(ctx, req, &ev)
	err = s.record(&ev, err)
	return resp, err
}

func (s *Server) signJWT(ctx context.Context, req *signerv1.SignJWTRequest, ev *audit.Event) (*signerv1.SignJWTResponse, error) {
	rules, err := s.authorize(ctx, req.GetKey(), authz.OpSignJWT)
	if err != nil {
		return nil, err
	}
	k, err := s.lookup(req.GetKey())
	if err != nil {
		return nil, err
	}
	claims, err := decodeClaims(req.GetClaimsJson())
	if err != nil {
		return nil, err
	}
	ev.Claims = summarize(claims)
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(authz.MaxTokenTTL/time.Second) {
		return nil, invalidArgument("ttl_seconds: %d out of range", req.GetTtlSeconds())
	}
	ttl, err := rules.CheckClaims(claims, time.Duration(req.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, err
	}
	v := k.Active
	if v == nil || v.Signer == nil {
		return nil, failedPrecondition("key %q has no active version", k.Name)
	}
	now := s.now().Truncate(time.Second)
	exp := now.Add(ttl)
	if rules != nil && rules.Issuer != "" {
		claims["iss"] = rules.Issuer
	}
	claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), exp.Unix()
	if rules != nil && rules.GenerateJTI {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("generate jti: %w", err)
		}
		claims["jti"] = b64.EncodeToString(id)
	}
	ev.Claims, ev.Kid, ev.Alg = summarize(claims), v.Kid, string(k.Alg)

	header, err := json.Marshal(jwtHeader{Alg: string(k.Alg), Kid: v.Kid, Typ: "JWT"})
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return nil, err
	}
	signingInput := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	// No token is made that VerifyJWT would refuse for its size.
	if n := len(signingInput) + 1 + b64.EncodedLen(jose.SignatureSize(v.Signer.Public())); n > MaxTokenBytes {
		return nil, invalidArgument("claims_json: the token would be %d bytes, limit is %d", n, MaxTokenBytes)
	}
	ev.Input = audit.InputHash([]byte(signingInput))
	sig, err := s.signJWS(ctx, v, signingInput, ev)
	if err != nil {
		return nil, err
	}
	return &signerv1.SignJWTResponse{Token: signingInput + "." + b64.EncodeToString(sig), Kid: v.Kid,
		ExpiresAt: timestamppb.New(exp)}, nil
}

// signJWS signs a JWS signing input with version v in the JOSE form (raw r||s for ECDSA, PSS salt = hash
// length).
func (s *Server) signJWS(ctx context.Context, v *keyring.LoadedVersion, signingInput string, ev *audit.Event) ([]byte, error) {
	return s.signInSlot(ctx, v, ev, func() ([]byte, error) { return jose.NewSigningMethod(v.Key.Alg).Sign(signingInput, v.Signer) })
}

// decodeClaims parses the caller's claims: one JSON object, numbers kept exact.
func decodeClaims(s string) (map[string]any, error) {
	if len(s) > MaxTokenBytes {
		return nil, invalidArgument("claims_json: %d bytes, limit is %d", len(s), MaxTokenBytes)
	}
	if strings.TrimSpace(s) == "" {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, invalidArgument("claims_json: not a JSON object: %v", err)
	}
	if claims == nil {
		return nil, invalidArgument("claims_json: not a JSON object")
	}
	if !atEnd(dec) {
		return nil, invalidArgument("claims_json: trailing data after the object")
	}
	return claims, nil
}

// summarize picks the claims the audit trail records.
func summarize(claims map[string]any) *audit.Claims {
	c := &audit.Claims{}
	c.Iss, _ = claims["iss"].(string)
	c.Sub, _ = claims["sub"].(string)
	c.Jti, _ = claims["jti"].(string)
	switch aud := claims["aud"].(type) {
	case string:
		c.Aud = []string{aud}
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok {
				c.Aud = append(c.Aud, s)
			}
		}
	}
	switch exp := claims["exp"].(type) {
	case int64:
		c.Exp = exp
	case json.Number:
		c.Exp, _ = exp.Int64()
	}
	return c
}

// VerifyJWT implements signer.v1.Signer. It accepts only compact JWS with signerd's header, finds the
// version by kid among the published ones, pins the algorithm to that key's, and checks the signature
// with the cached public key (never the token), then exp, nbf and iat with the leeway, iss when the
// caller's grant names an issuer, and aud when the request gives one.
func (s *Server) VerifyJWT(ctx context.Context, req *signerv1.VerifyJWTRequest) (*signerv1.VerifyJWTResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: string(authz.OpVerifyJWT)}
	resp, err := s.verifyJWT(ctx, req, &ev)
	err = s.record(&ev, err)
	return resp, err
}

func (s *Server) verifyJWT(ctx context.Context, req *signerv1.VerifyJWTRequest, ev *audit.Event) (*signerv1.VerifyJWTResponse, error) {
	tok := req.GetToken()
	switch {
	case tok == "":
		return nil, invalidArgument("token: empty")
	case len(tok) > MaxTokenBytes:
		return nil, invalidArgument("token: %d bytes, limit is %d", len(tok), MaxTokenBytes)
	}
	ev.Input = audit.InputHash([]byte(tok))
	// A caller that may verify no key's tokens gets nothing done for it: no signature check, and no
	// re-read of the token for a kid this daemon does not know (which another caller's token could
	// need a moment later).
	if !s.policy.Load().AllowsSome(identity(ctx), authz.OpVerifyJWT) {
		return nil, permissionDenied("identity %q may not verify tokens", identity(ctx))
	}
	vt := s.verified.get(tok)
	cached := vt != nil
	if !cached {
		var err error
		if vt, err = s.verifySignature(tok, ev); err != nil {
			return nil, err
		}
	}
	// Whether cached or not: the kid must be published now, and the caller allowed to verify with it.
	v, ok := s.published(vt.kid)
	if !ok {
		return nil, invalidToken("unknown kid %q", vt.kid)
	}
	ev.Key, ev.Kid, ev.Alg, ev.Claims = v.Key.Name, v.Kid, string(v.Key.Alg), summarize(vt.claims)
	// The refusal does not name the key: a token's kid must not tell a stranger the key's name.
	rules, ok := s.policy.Load().Allow(identity(ctx), v.Key.Name, authz.OpVerifyJWT)
	if !ok {
		return nil, permissionDenied("identity %q may not verify tokens of this key", identity(ctx))
	}
	opts := []jwt.ParserOption{jwt.WithLeeway(s.leeway), jwt.WithTimeFunc(s.now), jwt.WithIssuedAt(), jwt.WithExpirationRequired()}
	if rules != nil && rules.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(rules.Issuer))
	}
	if aud := req.GetAudience(); aud != "" {
		opts = append(opts, jwt.WithAudience(aud))
	}
	if err := jwt.NewValidator(opts...).Validate(vt.claims); err != nil {
		return nil, invalidToken("%s", claimsReason(err))
	}
	// Only tokens a caller was allowed to verify, and that passed, are remembered, and only small ones,
	// so that the cache cannot be filled by strangers or with large tokens.
	if !cached && len(tok) <= maxCachedToken {
		s.verified.put(tok, vt)
	}
	return &signerv1.VerifyJWTResponse{ClaimsJson: string(vt.payload), Kid: v.Kid, Key: v.Key.Name}, nil
}

// verifySignature parses a compact JWS and checks its header and signature against the published
// version its kid names. Its errors are the caller's: the token is invalid.
func (s *Server) verifySignature(tok string, ev *audit.Event) (*verified, error) {
	// The decoder skips CR and LF even when strict: refuse them, and anything else outside the alphabet,
	// so that one token has one spelling (the verified-token cache is keyed by it). One signature can
	// still have two: an ES* token's (r, n-s) twin verifies too, and anyone holding the token can make
	// it. signerd signs in low-S form (jose.SigningMethod) but accepts both, as RFC 7518 does and as
	// tokens signed before it did need; a twin is just one more cache entry. A token's text is therefore
	// no unique name for it: deny lists go by jti.
	if i := strings.IndexFunc(tok, func(r rune) bool { return !isJWSChar(r) }); i >= 0 {
		return nil, invalidToken("not a compact JWS (character %q at offset %d)", tok[i], i)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, invalidToken("not a compact JWS (want three dot-separated parts, got %d)", len(parts))
	}
	hdr, err := decodeHeader(parts[0])
	if err != nil {
		return nil, invalidToken("header: %v", err)
	}
	ev.Kid, ev.Alg = hdr.Kid, hdr.Alg
	if hdr.Kid == "" {
		return nil, invalidToken("header has no kid")
	}
	// kids are public (they are in the JWKS), so looking one up before authorization reveals nothing.
	v, ok := s.published(hdr.Kid)
	if !ok {
		return nil, invalidToken("unknown kid %q", hdr.Kid)
	}
	if hdr.Alg != string(v.Key.Alg) {
		return nil, invalidToken("algorithm %q does not match the key's %s", hdr.Alg, v.Key.Alg)
	}
	sig, err := b64Strict.DecodeString(parts[2])
	if err != nil {
		return nil, invalidToken("signature: not base64url")
	}
	if err := jose.NewSigningMethod(v.Key.Alg).Verify(parts[0]+"."+parts[1], sig, v.Public); err != nil {
		return nil, invalidToken("bad signature")
	}
	payload, err := b64Strict.DecodeString(parts[1])
	if err != nil {
		return nil, invalidToken("payload: not base64url")
	}
	var claims jwt.MapClaims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims == nil || !atEnd(dec) {
		return nil, invalidToken("payload: not a JSON object")
	}
	return &verified{kid: v.Kid, payload: payload, claims: claims}, nil
}

// isJWSChar reports whether r may appear in a compact JWS: the base64url alphabet and the dot.
func isJWSChar(r rune) bool {
	return 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.'
}

// invalidToken is the status of a token that does not verify: UNAUTHENTICATED with the reason.
func invalidToken(format string, args ...any) error {
	return unauthenticated("invalid token: "+format, args...)
}

// claimsReason words golang-jwt's validation errors.
func claimsReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return err.Error()
	}
	return err.Error()
}

// decodeHeader decodes a JWS header, refusing any member other than the alg, kid and typ signerd writes
// (a "crit", "jku", "x5u" or any header signerd does not write is refused rather than ignored). Member
// names are matched exactly (RFC 7515 section 4: they are case-sensitive), which encoding/json's struct
// decoding does not do: it would take "ALG" for "alg", where every other verifier sees no alg.
func decodeHeader(part string) (jwtHeader, error) {
	var hdr jwtHeader
	b, err := b64Strict.DecodeString(part)
	if err != nil {
		return hdr, errors.New("not base64url")
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&members); err != nil || members == nil {
		return hdr, errors.New("not a JSON object")
	}
	if !atEnd(dec) {
		return hdr, errors.New("trailing data")
	}
	fields := map[string]*string{"alg": &hdr.Alg, "kid": &hdr.Kid, "typ": &hdr.Typ}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		raw, field := members[name], fields[name]
		ok := field != nil
		if !ok {
			return hdr, fmt.Errorf("member %q is not one signerd writes", name)
		}
		if err := json.Unmarshal(raw, field); err != nil {
			return hdr, fmt.Errorf("member %q is not a string", name)
		}
	}
	return hdr, nil
}

// atEnd reports whether dec has nothing left but white space. (Decoder.More is false before a stray
// "}" or "]" too.)
func atEnd(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}
