#include <doctest/doctest.h>
// placeholder: filled in by the module author
