@ 0x00000007
i 2244638
o 125
l <S2244638AbmLFR4mM0ILj/20261206175642Z+1@mail.example.org>
e root <root>
e root@mail.example.org
s local root@mail.example.org root@mail.example.org 1
r           local root root@mail.example.org 65534
N ORCPT=rfc822;root INRCPT=rfc822;root INFROM=rfc822;root
m
Received: ("??"@vm) by mail.example.org id S2244638AbmLFR4mM0ILj;
	Sun, 6 Dec 2026 17:56:42 +0000
From:	root <root@mail.example.org>
Subject: t
Message-Id: <S2244638AbmLFR4mM0ILj/20261206175642Z+1@mail.example.org>
To:	unlisted-recipients:; (no To-header on input)
Date:	Sun, 6 Dec 2026 17:56:42 +0000

