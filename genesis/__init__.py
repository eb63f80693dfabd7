"""Chain parameters in genesis, the genesis document and its hash, local network generation."""

from genesis.document import (
    Genesis,
    GenesisAccount,
    GenesisValidator,
    InvalidGenesis,
    genesis_json_bytes,
    genesis_state,
    load_genesis,
    save_genesis,
)
from genesis.localnet import (
    FAUCET_BALANCE,
    FAUCET_NAME,
    LocalnetError,
    LocalnetLayout,
    NodeLayout,
    create_localnet,
    free_ports,
    write_node_config,
)

__all__ = [
    "FAUCET_BALANCE",
    "FAUCET_NAME",
    "Genesis",
    "GenesisAccount",
    "GenesisValidator",
    "InvalidGenesis",
    "LocalnetError",
    "LocalnetLayout",
    "NodeLayout",
    "create_localnet",
    "free_ports",
    "genesis_json_bytes",
    "genesis_state",
    "load_genesis",
    "save_genesis",
    "write_node_config",
]
