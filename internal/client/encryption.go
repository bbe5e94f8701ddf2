package client

import (
	"context"
	"errors"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Encryption reads the cluster's encryption setting (off when never set).
func (c *Client) Encryption(ctx context.Context) (api.EncryptionConfig, error) {
	cfg, _, err := datastore.Get[api.EncryptionConfig](ctx, c.DS, datastore.KeyEncryption)
	if errors.Is(err, datastore.ErrNotFound) {
		return api.EncryptionConfig{}, nil
	}
	return cfg, err
}

// UpdateEncryption changes the setting with compare-and-swap, so two
// operators (say, one rotating while one turns it on) both win.
func (c *Client) UpdateEncryption(ctx context.Context, fn func(*api.EncryptionConfig)) (api.EncryptionConfig, error) {
	for {
		cfg, rev, err := datastore.Get[api.EncryptionConfig](ctx, c.DS, datastore.KeyEncryption)
		if errors.Is(err, datastore.ErrNotFound) {
			cfg, rev, err = api.EncryptionConfig{}, 0, nil
		}
		if err != nil {
			return cfg, err
		}
		fn(&cfg)
		if err := c.DS.CAS(ctx, datastore.KeyEncryption, rev, cfg); !errors.Is(err, datastore.ErrConflict) {
			return cfg, err
		}
	}
}
