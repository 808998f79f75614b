/** The global setup leaves no test running stale fixtures: dist/ is at least as new as every source. */
import { describe, expect, it } from 'vitest';
import { staleSource } from '../global-setup.js';

describe('dist/ is current', () => {
  it('no source under lib/, cli/ or bench/ is newer than its compiled file', () => {
    expect(staleSource()).toBeNull();
  });
});
