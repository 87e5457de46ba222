// Data shared by every page: the last /stats answer (whose now_ms is the dashboard's "now") and the asset list
// (for display names).

export const state = {
  stats: null,
  assets: new Map(), // id -> asset (last fetched list)
};

export function sampleNow() {
  return state.stats ? state.stats.now_ms : null;
}

export function rememberAssets(list) {
  state.assets = new Map(list.map((a) => [a.id, a]));
}
