// Least-requests balancing as Envoy's LEAST_REQUEST does it with equal
// weights: the power of two choices. Two distinct endpoints at random, the
// one with fewer active requests wins (the first on a tie). Cheap, and it
// sends a slow endpoint, whose requests pile up, less. Pure: the active
// counts and the random numbers are given.

/** The endpoint of the two drawn with `random` (in [0, 1)) that has fewer `active` requests; undefined when there is none. */
export function pickLeastRequest<T>(endpoints: readonly T[], active: (endpoint: T) => number, random: () => number): T | undefined {
  const n = endpoints.length;
  if (n <= 1) return endpoints[0];
  const i = Math.min(n - 1, Math.floor(random() * n));
  // The second draw is over the other n-1, so the two are distinct.
  let j = Math.min(n - 2, Math.floor(random() * (n - 1)));
  if (j >= i) j++;
  const a = endpoints[i]!;
  const b = endpoints[j]!;
  return active(b) < active(a) ? b : a;
}
