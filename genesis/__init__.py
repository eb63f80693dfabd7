"""Chain parameters in genesis, the genesis document and its hash, the genesis ceremony,
node homes, local network generation."""

from genesis.ceremony import (
    InvalidContribution,
    SignedContribution,
    assemble,
    load_contribution,
    make_contribution,
    save_contribution,
)
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
from genesis.home import (
    DEFAULT_BLOCK_INTERVAL_MS,
    HomeError,
    HomeInfo,
    init_home,
    install_genesis,
    write_node_config,
)
from genesis.localnet import (
    FAUCET_BALANCE,
    FAUCET_NAME,
    LocalnetError,
    LocalnetLayout,
    NodeLayout,
    create_localnet,
    free_ports,
)

__all__ = [
    "DEFAULT_BLOCK_INTERVAL_MS",
    "HomeError",
    "HomeInfo",
    "InvalidContribution",
    "SignedContribution",
    "assemble",
    "init_home",
    "install_genesis",
    "load_contribution",
    "make_contribution",
    "save_contribution",
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
