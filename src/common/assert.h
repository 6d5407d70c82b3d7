/* assert.h - OSB_ASSERT: invariants checked at run time in every build, release included
 * (like git's BUG()): a broken invariant prints where and aborts, rather than corrupting
 * state that a later crash would blame on something else. Only for cheap checks.
 * Layer: common. */
#ifndef OSB_COMMON_ASSERT_H
#define OSB_COMMON_ASSERT_H

_Noreturn void osb_assert_fail(const char *expr, const char *file, int line);

#define OSB_ASSERT(e) ((e) ? (void)0 : osb_assert_fail(#e, __FILE__, __LINE__))

#endif
