//! Nix-style inputs of pibake: lockfile, content-addressed store, fetch, local apt repository.
