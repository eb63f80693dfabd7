// Every balance of an account, each checked here against its own proof (GET
// /v1/accounts/{a}?proof=true): the native one, the list of issued currencies (so none
// is left out), and in each currency the balance and the currency's own record (its
// decimals). Keys are computed here from the address and symbol, never the node's.
import { ApiError } from "./api.js";
import { concat, fields, unpack, utf8 } from "./codec.js";
import { parseAddress } from "./crypto.js";
import { isVerificationFailure, NotVerified } from "./light.js";
import { ACCOUNT, BALANCE, CURRENCY, CURRENCY_LIST } from "./records.js";

// vm/prefixes.py KeyPrefix.
const ACCOUNT_PREFIX = 0x01;
const BALANCE_PREFIX = 0x02;
const CURRENCY_PREFIX = 0x03;
const CURRENCY_LIST_KEY = Uint8Array.of(0x04);

// `check()` resolves to the proven figure, or throws: the outcome either way.
async function outcome(check) {
  try {
    return { verified: true, ...(await check()) };
  } catch (err) {
    // The node could not give what the proof needs (busy, pruned, gone): the figure is
    // then its word alone, shown as such, not an error in place of the whole wallet.
    if (err instanceof ApiError) return { verified: false, reason: `the node could not prove it: ${err.message || err.code}` };
    if (!isVerificationFailure(err)) throw err;
    return { verified: false, reason: err.message };
  }
}

const decoded = (value, spec, name) => fields(unpack(value), spec, name);

// `light` a LightClient (or null with `failure`, the reason none could be made), `doc`
// the account answer with proofs. Each balance: { currency, decimals, amount, verified,
// reason }; amounts exact (BigInt above 2**53). Unverified ones carry the node's figures.
export async function provenBalances(light, address, doc, failure = "") {
  const raw = parseAddress(address);
  // Each value of the answer is proven at the answer's height.
  const proven = async (key, answer) => {
    if (!light) throw new NotVerified(failure);
    if (answer === null || typeof answer !== "object") throw new NotVerified("no proof in the answer");
    return (await light.provenValue(key, { height: doc.height, value: answer.value, proof: answer.proof })).value;
  };
  const native = await outcome(async () => {
    const value = await proven(concat(Uint8Array.of(ACCOUNT_PREFIX), raw), doc);
    const amount = value === null ? 0 : decoded(value, ACCOUNT, "Account").balance;
    if (amount !== doc.balance) throw new NotVerified("the node's figure differs from the proven one");
    return { amount };
  });
  const listed = Array.isArray(doc.balances) ? doc.balances.filter((b) => b !== null && typeof b === "object") : [];
  const list = await outcome(async () => {
    const value = await proven(CURRENCY_LIST_KEY, doc.currencies ?? null);
    const symbols = value === null ? [] : decoded(value, CURRENCY_LIST, "CurrencyList").symbols;
    symbols.forEach((s) => fields([s], [["symbol", "str"]], "CurrencyList"));
    return { symbols };
  });
  // The proven list decides which currencies there are; without it, the node's.
  const symbols = list.verified ? list.symbols : listed.map((b) => String(b.currency));
  const currencies = await Promise.all(
    symbols.map(async (symbol) => {
      const entry = listed.find((b) => b.currency === symbol);
      const shown = { currency: symbol, decimals: entry?.decimals ?? 0, amount: entry?.balance ?? 0 };
      if (!entry) return { ...shown, verified: false, reason: "the node left this balance out" };
      const checked = await outcome(async () => {
        const value = await proven(concat(Uint8Array.of(BALANCE_PREFIX), raw, utf8(symbol)), entry);
        const amount = value === null ? 0 : decoded(value, BALANCE, "Balance").amount;
        if (amount !== entry.balance) throw new NotVerified("the node's figure differs from the proven one");
        // The decimals it is shown with, from the currency's record at the same height.
        const record = await light.provenState(concat(Uint8Array.of(CURRENCY_PREFIX), utf8(symbol)), doc.height);
        if (record.value === null) throw new NotVerified(`no currency ${symbol} in the state`);
        const currency = decoded(record.value, CURRENCY, "Currency");
        if (currency.symbol !== symbol) throw new NotVerified("the currency record is another's");
        return { amount, decimals: currency.decimals };
      });
      return { ...shown, ...checked };
    }),
  );
  return {
    native,
    list: { verified: list.verified, reason: list.reason ?? "" },
    currencies,
  };
}
