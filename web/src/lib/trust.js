// The light client the pages share: one per page load (the producers it derived and the
// headers it checked stay good), made again when the user changes the genesis they trust.
import { api, genesis } from "./api.js";
import { forgetTrustedGenesis, LightClient, trustGenesis } from "./light.js";

let client = null;

export function lightClient() {
  client ??= genesis().then((g) => new LightClient(api, g));
  // A failure is not kept: the next page asks again.
  client.catch(() => (client = null));
  return client;
}

export function enterGenesisHash(text) {
  const hash = trustGenesis(text);
  client = null;
  return hash;
}

export function forgetGenesisHash() {
  forgetTrustedGenesis();
  client = null;
}
