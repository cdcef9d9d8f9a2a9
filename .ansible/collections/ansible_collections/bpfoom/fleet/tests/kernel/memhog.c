// SPDX-License-Identifier: GPL-2.0
/*
 * memhog NAME MIB: a process named NAME (its comm) that holds MIB MiB of
 * memory, every page written so that all of it is charged to its memcg
 * (a memset the compiler may drop would charge nothing). Prints "ready"
 * once it holds everything, then sleeps until killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: memhog NAME MIB\n");
		return 2;
	}
	prctl(PR_SET_NAME, argv[1]);
	size_t size = (size_t)atol(argv[2]) << 20;
	volatile char *memory = mmap(NULL, size, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (size_t offset = 0; offset < size; offset += 4096)
		memory[offset] = 1;
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
