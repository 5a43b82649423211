package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	securityapi "istio.io/api/security/v1alpha1"
)

// Server is the CSR service workloads call for their certificate: Istio's
// istio.v1.auth.IstioCertificateService, so Istio's own agent can use it too. It only
// ever sees CSRs; private keys stay with the workloads. Every request must authenticate
// (fail closed: no Authenticator, no certificate).
type Server struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	ca   *CA
	auth Authenticator
	log  *slog.Logger
}

var _ securityapi.IstioCertificateServiceServer = (*Server)(nil)

// impersonationKey is the request metadata key Istio's agent uses to ask for another
// identity (a node agent acting for a pod). weft never grants impersonation.
const impersonationKey = "ImpersonatedIdentity"

// NewServer serves c's certificates to callers auth accepts.
func NewServer(c *CA, auth Authenticator, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{ca: c, auth: auth, log: log.With("component", "ca-server")}
}

// Register adds the service to a gRPC server (the control plane's 15010/15012).
func (s *Server) Register(g grpc.ServiceRegistrar) {
	securityapi.RegisterIstioCertificateServiceServer(g, s)
}

// CreateCertificate authenticates the caller, checks the CSR (signature, key) and issues
// a certificate for the caller's SPIFFE ID. The response follows Istio's: PEM strings,
// leaf first, then intermediates, and the root bundle last.
func (s *Server) CreateCertificate(ctx context.Context, req *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	if s.auth == nil {
		return nil, status.Error(codes.Unauthenticated, "ca: no authenticator configured")
	}
	id, err := s.auth.Authenticate(ctx)
	if err != nil {
		s.log.Info("certificate request denied", "reason", err.Error())
		return nil, status.Error(codes.Unauthenticated, "ca: authentication failed")
	}
	if err := id.Validate(); err != nil {
		s.log.Warn("authenticator returned an invalid identity", "identity", id.String(), "error", err)
		return nil, status.Error(codes.PermissionDenied, "ca: invalid caller identity")
	}
	spiffe := id.SpiffeID(s.ca.TrustDomain())
	log := s.log.With("identity", spiffe, "workload", id.Workload)

	if v := req.GetMetadata().GetFields()[impersonationKey].GetStringValue(); v != "" && v != spiffe {
		log.Warn("certificate request denied: impersonation", "requested", v)
		return nil, status.Errorf(codes.PermissionDenied, "ca: caller %s may not request identity %q", spiffe, v)
	}
	csr, err := ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		log.Info("certificate request rejected", "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// The certificate carries the authenticated identity whatever the CSR says, but a CSR
	// asking for a different SPIFFE ID is refused outright: it is a misconfigured or
	// hostile caller, and Istio's API requires the caller to be authorized for every SAN
	// in the CSR.
	for _, u := range csr.URIs {
		if u.Scheme == "spiffe" && u.String() != spiffe {
			log.Warn("certificate request denied: CSR names another identity", "requested", u.String())
			return nil, status.Errorf(codes.PermissionDenied, "ca: caller %s may not request identity %q", spiffe, u.String())
		}
	}
	secs := req.GetValidityDuration()
	if secs < 0 {
		return nil, status.Error(codes.InvalidArgument, "ca: validity_duration: must not be negative")
	}
	ttl := time.Duration(0)
	if secs > 0 {
		if secs > math.MaxInt64/int64(time.Second) {
			secs = math.MaxInt64 / int64(time.Second) // then rejected as above the maximum
		}
		ttl = time.Duration(secs) * time.Second
	}
	chain, err := s.ca.Sign(csr, spiffe, ttl)
	switch {
	case errors.Is(err, ErrInvalidCSR), errors.Is(err, ErrInvalidTTL):
		log.Info("certificate request rejected", "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrIdentity):
		log.Warn("certificate request denied", "error", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		log.Error("certificate signing failed", "error", err)
		return nil, status.Error(codes.Internal, "ca: signing failed")
	}
	out := make([]string, 0, len(chain)+1)
	for _, der := range chain {
		out = append(out, string(encodeCerts([][]byte{der})))
	}
	out = append(out, string(s.ca.Roots()))
	if leaf, err := x509.ParseCertificate(chain[0]); err == nil {
		log.Info("issued workload certificate", "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter, "key", csr.PublicKeyAlgorithm.String())
	}
	return &securityapi.IstioCertificateResponse{CertChain: out}, nil
}
