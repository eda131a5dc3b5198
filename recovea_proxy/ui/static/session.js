// The signed-in key: in this tab's sessionStorage only (never localStorage, a cookie
// or a URL), gone when the tab closes or the user signs out.
const SLOT = "recovea.key";

export function currentKey() {
  return sessionStorage.getItem(SLOT);
}

export function keepKey(key) {
  sessionStorage.setItem(SLOT, key);
}

export function forgetKey() {
  sessionStorage.removeItem(SLOT);
}
