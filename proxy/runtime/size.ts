// Byte sizes in config files are strings with a binary unit: "512MiB", "1GiB", "64KiB", "4096B".

const UNIT_BYTES = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 } as const;
const PATTERN = /^(\d+(?:\.\d+)?)(B|KiB|MiB|GiB|TiB)$/;

/** Bytes of a size string, or undefined if it is not one. */
export function parseSize(text: string): number | undefined {
  const match = PATTERN.exec(text.trim());
  if (!match) return undefined;
  const bytes = Number(match[1]) * UNIT_BYTES[match[2] as keyof typeof UNIT_BYTES];
  return Number.isSafeInteger(Math.round(bytes)) ? Math.round(bytes) : undefined;
}
