package signerv1

// Limits of the API: signerd enforces them, and clients may check a request against them before sending
// it. (This file is written by hand; the rest of the package is generated from signer.proto.)
const (
	// MaxMessageBytes caps the message a caller may ask signerd to hash and sign (SignRequest.message).
	MaxMessageBytes = 64 << 10
	// MaxTokenBytes caps a JWT given to VerifyJWT and one SignJWT makes (and so the claims given to it).
	MaxTokenBytes = MaxMessageBytes
	// MaxRequestBytes caps one request message, framing included: room for a MaxMessageBytes message
	// or a MaxTokenBytes token and the fields around it. gRPC refuses a larger one with RESOURCE_EXHAUSTED before any
	// handler runs; on a SignStream that ends the whole stream, so client.Stream refuses it first.
	MaxRequestBytes = MaxMessageBytes + 4<<10
)
