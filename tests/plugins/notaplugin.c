/* notaplugin: a valid shared object with no livehub symbol at all; the hub must refuse it as
 * "not a livehub plugin". */
#include <livehub/plugin.h>

LH_EXPORT int notaplugin_answer(void);
LH_EXPORT int notaplugin_answer(void)
{
    return 42;
}
