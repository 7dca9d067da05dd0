// The rapid-reset bound (CVE-2023-44487): a client that opens streams and
// cancels them (or has them refused) costs the upstream work for no answer.
// Each such stream spends a token; tokens come back at a steady rate up to a
// burst. Spent out, the connection is ended with GOAWAY ENHANCE_YOUR_CALM.
// Pure: the clock is the caller's.

export class ResetBudget {
  private tokens: number;
  private at: number;

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  /** A stream reset by the client before its answer ended, or refused, at `now` (ms): false once the budget is spent. */
  spend(now: number): boolean {
    if (now > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
      this.at = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
