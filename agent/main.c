#include <stdio.h>
#include "version.h"
int main(void) { printf("scalekiq %s\n", SCALEKIQ_VERSION); return 0; }
