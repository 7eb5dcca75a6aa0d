package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/server/authz"
)

// apiError is an error meant for the caller: its message is safe to return as is.
type apiError struct {
	code codes.Code
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func invalidArgument(format string, args ...any) error {
	return &apiError{codes.InvalidArgument, fmt.Sprintf(format, args...)}
}

func permissionDenied(format string, args ...any) error {
	return &apiError{codes.PermissionDenied, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiError{codes.NotFound, fmt.Sprintf(format, args...)}
}

func failedPrecondition(format string, args ...any) error {
	return &apiError{codes.FailedPrecondition, fmt.Sprintf(format, args...)}
}

func unauthenticated(format string, args ...any) error {
	return &apiError{codes.Unauthenticated, fmt.Sprintf(format, args...)}
}

// Optional abilities of errors from the key backend (hsm errors have them); discovered with errors.As so
// that this package never imports the HSM layer.
type (
	invalidInputError interface{ InvalidInput() bool }
	busyError         interface{ Busy() bool }
	unavailableError  interface{ Unavailable() bool }
	missingError      interface{ Missing() bool }
)

// toStatus is the one place where errors become gRPC statuses. Messages for the caller are generic for
// backend failures; the detail goes to the log.
func toStatus(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var api *apiError
	var inv invalidInputError
	var busy busyError
	var unav unavailableError
	switch {
	case errors.As(err, &api):
		return status.Error(api.code, api.msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded before the key was free")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, keyring.ErrNotFound), errors.Is(err, keyring.ErrNoVersion):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, keyring.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, keyring.ErrState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, keyring.ErrBadName), errors.Is(err, keyring.ErrInvalid), errors.Is(err, jose.ErrUnsupportedAlgorithm):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, keyring.ErrLocked):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, authz.ErrClaimPolicy):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.As(err, &inv) && inv.InvalidInput():
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &busy) && busy.Busy():
		log.Warn("hsm busy", "err", err)
		return status.Error(codes.Unavailable, "signing capacity exhausted, retry")
	case errors.As(err, &unav) && unav.Unavailable():
		log.Error("hsm unavailable", "err", err)
		return status.Error(codes.Unavailable, "signing backend unavailable")
	}
	log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}
