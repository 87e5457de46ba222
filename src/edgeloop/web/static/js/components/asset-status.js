// How an asset's status and its alerts' severities are shown (fleet table, asset page).

export const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };

// no_data: none of the asset's devices has sent a sample yet (a new gateway's device, say): not an alert
export const ASSET_STATUS_TEXT = { no_data: "no data yet" };
export const ASSET_STATUS_TONE = { no_data: "offline" };
