package app

import (
	"io"
	"log/slog"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

// NewLogger returns the daemon's structured logger writing to w.
func NewLogger(w io.Writer, cfg config.Log) (*slog.Logger, error) {
	level, err := config.ParseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
