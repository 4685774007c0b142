"""Azure SDK adapters the kernel offers to both sides (Key Vault secrets)."""
