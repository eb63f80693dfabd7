// The chain's error codes as sentences a shopper reads. Codes without a sentence here
// fall back to the meaning the OpenAPI document gives them.
import { codeDescriptions } from "./api.js";

const PLAIN = {
  ok: "Done.",
  insufficient_funds: "Your balance is too low for this (after the fee). Add funds and try again.",
  insufficient_fee: "Your balance cannot pay the fee. Add funds first.",
  fee_too_low: "The fee offered is below the chain's minimum.",
  sold_out: "Sold out: the deal has no units left.",
  deal_not_started: "This deal has not started yet.",
  deal_ended: "This deal has ended.",
  deal_closed: "This deal is closed.",
  buyer_cap: "You already bought as many as this deal allows per shopper.",
  price_mismatch: "The price changed while you were ordering. Look again and retry.",
  stale_version: "The product changed while you were ordering. Look again and retry.",
  stale_key: "The merchant changed their key. Reload and order again.",
  insufficient_stock: "Not enough stock left.",
  listing_inactive: "This product is no longer sold.",
  unknown_listing: "This product does not exist.",
  unknown_deal: "This deal does not exist.",
  unknown_session: "This live session does not exist.",
  session_closed: "This live session has ended.",
  not_pinned: "This product is not on this live session.",
  self_dealing: "You cannot buy from or tip yourself.",
  registrar_party: "This key is one of the chain's registrars, who rule disputes: it cannot buy, bid or sell.",
  merchant_not_approved: "This merchant is not approved to sell right now.",
  invalid_amount: "That amount is not possible.",
  invalid_quantity: "That quantity is not possible.",
  text_too_long: "The text is too long.",
  unknown_auction: "This auction does not exist.",
  auction_closed: "This auction has ended.",
  auction_ended: "Bidding has closed: the auction is ending.",
  below_listing_price: "A host's auction cannot sell below the listing's price: set a reserve of at least that price.",
  bid_too_low: "Your maximum is below the lowest bid this auction takes now.",
  invalid_sealed_address: "Your shipping address could not be sealed for the merchant. Check it and try again.",
  nonce_too_low: "This transaction was already sent.",
  nonce_exhausted: "This account has sent the last transaction it can ever send. Use another key.",
  duplicate: "This transaction was already sent.",
  expired: "The transaction expired before it reached a block. Try again.",
  bad_signature: "The signature did not verify.",
  mempool_full: "The network is busy. Try again in a moment.",
  unreachable: "The node cannot be reached. Check your connection.",
  too_slow: "The node did not answer in time. Check your connection and try again.",
  // The page's own refusals of what a node sent (api.js), named apart from the chain's
  // codes for a transaction (too_large, malformed).
  answer_too_large: "The node's answer was far larger than any it should send, so it was not read. Try another node.",
  answer_malformed: "The node's answer could not be read. Try again, or another node.",
  timeout: "No block took the transaction in time. Check again later.",
};

export async function plain(code, message = "") {
  // The page's own refusal to sign says why in its message.
  if (code === "not_verified") return message;
  if (PLAIN[code]) return PLAIN[code];
  const meanings = await codeDescriptions();
  const meaning = meanings[code] ?? message ?? code;
  return `Refused: ${meaning.charAt(0).toUpperCase()}${meaning.slice(1)}.`;
}
