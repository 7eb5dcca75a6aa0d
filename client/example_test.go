package client_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/signerd/signerd/client"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// Connect with the files `signerd dev` writes, then sign a digest with the key "api-tokens" (an ES256
// key). The signature is ASN.1 DER, as from any crypto.Signer.
func ExampleDial() {
	c, err := client.Dial("signerd.internal:8443", client.Options{
		CACertFile: "/etc/signerd/ca.pem",
		CertFile:   "/etc/myservice/client.pem",
		KeyFile:    "/etc/myservice/client-key.pem",
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key, err := c.Key(ctx, "api-tokens")
	if err != nil {
		log.Print(err)
		return
	}
	digest := sha256.Sum256([]byte("hello"))
	sig, err := key.SignContext(ctx, rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		log.Print(err)
		return
	}
	fmt.Println(key.Alg(), key.Kid(), base64.StdEncoding.EncodeToString(sig))
}

// A Key is a crypto.Signer, so the standard library signs with it: here a certificate, and in the same
// way the private key of a tls.Certificate.
func ExampleKey() {
	c, err := client.Dial("signerd.internal:8443", client.Options{
		CACertFile: "/etc/signerd/ca.pem",
		CertFile:   "/etc/myservice/client.pem",
		KeyFile:    "/etc/myservice/client-key.pem",
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	key, err := c.Key(context.Background(), "internal-ca")
	if err != nil {
		log.Print(err)
		return
	}
	tmpl := &x509.Certificate{ /* ... */ }
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		log.Print(err)
		return
	}
	_ = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Build and sign a JWT locally with golang-jwt, the signature made by signerd. Verifiers need the kid
// header to find the key in the JWKS; Key.NewToken sets it.
func ExampleKey_SigningMethod() {
	c, err := client.Dial("signerd.internal:8443", client.Options{
		CACertFile: "/etc/signerd/ca.pem",
		CertFile:   "/etc/myservice/client.pem",
		KeyFile:    "/etc/myservice/client-key.pem",
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	key, err := c.Key(context.Background(), "api-tokens")
	if err != nil {
		log.Print(err)
		return
	}
	claims := jwt.RegisteredClaims{
		Subject:   "alice",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
	}
	token := jwt.NewWithClaims(key.SigningMethod(), claims)
	token.Header["kid"] = key.Kid()
	signed, err := token.SignedString(key)
	if err != nil {
		log.Print(err)
		return
	}
	fmt.Println(signed)
}

// Verify tokens with the keys signerd publishes. The JWKS is fetched once and cached; a token signed
// by a newly rotated key makes the keyfunc fetch it again.
func ExampleJWKSKeyfunc() {
	jwks := client.NewJWKSKeyfunc("https://signerd.internal:8444/.well-known/jwks.json", &http.Client{Timeout: 5 * time.Second})

	tokenString := os.Getenv("TOKEN")
	token, err := jwt.Parse(tokenString, jwks.Keyfunc,
		jwt.WithValidMethods([]string{"ES256"}),
		jwt.WithAudience("billing"),
		jwt.WithExpirationRequired(),
	)
	if err != nil {
		log.Print(err)
		return
	}
	sub, _ := token.Claims.GetSubject()
	fmt.Println("token for", sub)
}

// Sign many digests from many goroutines over one SignStream: each request costs a message each way
// rather than a whole call, for services that sign at high rates. Each result is what Sign would give.
func ExampleClient_SignStream() {
	c, err := client.Dial("signerd.internal:8443", client.Options{
		CACertFile: "/etc/signerd/ca.pem",
		CertFile:   "/etc/myservice/client.pem",
		KeyFile:    "/etc/myservice/client-key.pem",
	})
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()

	stream, err := c.SignStream(context.Background())
	if err != nil {
		log.Print(err)
		return
	}
	defer stream.Close()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			digest := sha256.Sum256(fmt.Appendf(nil, "record %d", i))
			resp, err := stream.Sign(ctx, &signerv1.SignRequest{Key: "ocsp-signer",
				Input: &signerv1.SignRequest_Digest{Digest: digest[:]}})
			if err != nil {
				log.Print(err) // this request's error (status.Code tells which); the others go on
				return
			}
			_ = resp.GetSignature()
		}()
	}
	wg.Wait()
}
