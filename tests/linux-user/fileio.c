/* Files and directories: open/read/write/lseek/pread/pwrite/readv/writev,
 * stat, fstatat, getdents via readdir, rename, link, symlink, readlink,
 * truncate, mkdir/rmdir, chmod, access, dup2, fcntl locks, O_APPEND. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define CHECK(x) do { if (!(x)) { printf("FAIL %s:%d %s errno=%d\n", __FILE__, __LINE__, #x, errno); } } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

int main(int argc, char **argv)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/tmp/lu-fileio");
    mkdir(dir, 0755);
    CHECK(chdir(dir) == 0);
    int fd = open("a.txt", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "hello file\n", 11) == 11);
    struct iovec iov[2] = { { "vec1 ", 5 }, { "vec2\n", 5 } };
    CHECK(writev(fd, iov, 2) == 10);
    CHECK(pwrite(fd, "HELLO", 5, 0) == 5);
    CHECK(lseek(fd, 0, SEEK_CUR) == 21);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    char buf[64] = { 0 };
    CHECK(read(fd, buf, sizeof buf) == 21);
    printf("content: %s", buf);
    memset(buf, 0, sizeof buf);
    CHECK(pread(fd, buf, 4, 11) == 4);
    printf("pread: %s\n", buf);
    char a[3] = { 0 }, b[4] = { 0 };
    struct iovec riov[2] = { { a, 2 }, { b, 3 } };
    lseek(fd, 6, SEEK_SET);
    CHECK(readv(fd, riov, 2) == 5);
    printf("readv: %s|%s\n", a, b);
    off64_t big = lseek64(fd, 5LL << 32, SEEK_SET);
    printf("lseek64 big: %d\n", big == (5LL << 32));
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    printf("size=%ld mode=%o nlink=%ld reg=%d\n", (long)st.st_size, st.st_mode & 0777, (long)st.st_nlink, S_ISREG(st.st_mode));
    CHECK(ftruncate(fd, 4) == 0);
    CHECK(stat("a.txt", &st) == 0);
    printf("after ftruncate size=%ld\n", (long)st.st_size);
    close(fd);

    fd = open("a.txt", O_WRONLY | O_APPEND);
    write(fd, "++", 2);
    close(fd);
    CHECK(truncate("a.txt", 6) == 0);
    fd = open("a.txt", O_RDONLY);
    memset(buf, 0, sizeof buf);
    read(fd, buf, sizeof buf);
    printf("after append+truncate: %s\n", buf);
    int fd2 = dup(fd);
    CHECK(dup2(fd, 10) == 10);
    CHECK(fcntl(10, F_GETFD) == 0);
    CHECK(fcntl(fd2, F_SETFD, FD_CLOEXEC) == 0);
    printf("cloexec=%d\n", fcntl(fd2, F_GETFD));
    close(fd2);
    close(10);
    close(fd);

    CHECK(link("a.txt", "b.txt") == 0);
    CHECK(symlink("a.txt", "c.lnk") == 0);
    char lk[64] = { 0 };
    CHECK(readlink("c.lnk", lk, sizeof lk) == 5);
    printf("readlink: %s\n", lk);
    CHECK(lstat("c.lnk", &st) == 0);
    printf("lstat symlink=%d\n", S_ISLNK(st.st_mode));
    CHECK(stat("c.lnk", &st) == 0);
    printf("stat via link size=%ld nlink=%ld\n", (long)st.st_size, (long)st.st_nlink);
    CHECK(rename("b.txt", "d.txt") == 0);
    CHECK(mkdir("sub", 0700) == 0);
    CHECK(chmod("d.txt", 0600) == 0);
    CHECK(fstatat(AT_FDCWD, "d.txt", &st, 0) == 0);
    printf("d.txt mode=%o\n", st.st_mode & 0777);
    printf("access missing: %d errno=%d\n", access("nope", F_OK), errno);
    printf("open missing: %d errno=%d\n", open("nope", O_RDONLY), errno);
    printf("mkdir existing: %d errno=%d\n", mkdir("sub", 0700), errno);

    DIR *d = opendir(".");
    char *names[16];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 16)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    for (int i = 0; i < n; i++)
        printf("entry %s\n", names[i]);

    fd = open("d.txt", O_RDWR);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 3 };
    CHECK(fcntl(fd, F_SETLK, &fl) == 0);
    fl.l_type = F_RDLCK;
    CHECK(fcntl(fd, F_GETLK, &fl) == 0);
    printf("getlk type unlocked=%d\n", fl.l_type == F_UNLCK);
    close(fd);

    char cwd[256];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    printf("cwd ends with dir: %d\n", strcmp(cwd, dir) == 0);
    unlink("a.txt");
    unlink("c.lnk");
    unlink("d.txt");
    CHECK(rmdir("sub") == 0);
    chdir("/");
    CHECK(rmdir(dir) == 0);
    printf("done\n");
    return 0;
}
